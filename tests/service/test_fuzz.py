"""Nothing a client sends makes the API answer 500: Schemathesis generates requests from the OpenAPI document (valid
and invalid bodies, path ids, query values, headers, and call sequences) and sends them to a real ``wdgrid serve``.
The queue is paused (``WDGRID_MAX_CONCURRENT_SWEEPS=0``), so the sweeps it manages to create wait instead of
training; a finished sweep with every optimizer gives the result routes real grids to work on."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from results import SqlStorage, Storage
from tests.factories import fill_sweep, make_spec
from tests.processes import start_server, stop_server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

# Checks not run, and why:
# - positive_data_acceptance: the spec's JSON schema cannot say everything its validators check (the cap on cells,
#   a range's whole number of steps, α > 0 on a list axis, distinct values), so some schema-valid bodies are rightly
#   a 422.
# - allow_header_conformance: a 405's `Allow` names the methods of one route (Starlette), not every route of the path.
EXCLUDED = "positive_data_acceptance,allow_header_conformance"


def _finished_sweep(store: Storage) -> int:
    grids = [
        {"optimizer": o, "lr": [0.01, 0.1], "weight_decay": [1e-4, 1e-3]} for o in ("sgd", "sgdw", "adam", "adamw")
    ]
    spec = make_spec(grids=grids, seeds=[0])
    # One diverged cell, so the grids hold a NaN.
    sweep = fill_sweep(
        store,
        spec,
        lambda t: (
            None
            if (t.optimizer, t.lr) == ("sgd", 0.1) and t.weight_decay == 1e-3
            else 10 + 100 * t.lr + 1000 * t.weight_decay
        ),
    )
    store.set_sweep_status(sweep.id, "running")
    return store.set_sweep_status(sweep.id, "completed").id


def test_no_request_gets_a_500(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
    with SqlStorage(db) as store:
        finished = _finished_sweep(store)
    token = secrets.token_hex(16)
    server = start_server(tmp_path, db, token, settings={"WDGRID_MAX_CONCURRENT_SWEEPS": "0"})
    try:
        command = [str(SCHEMATHESIS), "run", f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {token}"]
        command += ["--checks", "all", "--exclude-checks", EXCLUDED, "--max-examples", "25", "--seed", "0"]
        command += ["--workers", "1", "--no-color", "--request-timeout", "30"]
        result = subprocess.run(
            command,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "18/18" in result.stdout  # every operation was tested
    finally:
        stop_server(server)
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log, log[-4000:]
    assert "the queue PAUSED" in log.splitlines()[0]
    with SqlStorage(db) as store:
        created, _ = store.list_sweeps(limit=500)
        assert len(created) > 1  # the fuzzer got sweeps accepted...
        assert [s.id for s in created if s.started_at is not None] == [finished]  # ...and a paused queue ran none
