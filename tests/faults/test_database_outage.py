"""A database outage mid-sweep, on a PostgreSQL instance of the test's own (initdb'd in a temporary folder, on a
port of its own — never the shared server): stopped for several seconds while a real ``wdgrid serve`` drives a
sweep on real Ray workers, then started again. The driver rides it out (its store retries with back-off), so every
cell trains exactly once with one attempt and all its epochs; meanwhile the API answers 503 with Retry-After and
``/readyz`` says the database is down; afterwards everything reads back."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from results import SqlStorage
from tests.factories import spec_data
from tests.processes import Postgres, own_postgres, start_server, stop_server


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    with own_postgres() as pg:
        if pg is None:
            pytest.skip("PostgreSQL's server binaries are not installed here (.ci/run installs them)")
        yield pg


def test_a_database_outage_mid_sweep_loses_and_repeats_nothing(postgres: Postgres, tmp_path: Path):
    server = start_server(tmp_path, postgres.url, secrets.token_hex(16))
    try:
        with server.client() as c:
            spec = spec_data(
                epochs=12,
                seeds=[0],
                grids=[{"optimizer": "adamw", "lr": [1e-3, 2e-3], "weight_decay": [1e-4, 1e-3]}],
            )
            sweep_id = c.post("/sweeps", json=spec).json()["id"]
            deadline = time.monotonic() + 120
            while not any(t["status"] == "running" for t in c.get(f"/sweeps/{sweep_id}/trials").json()["data"]):
                assert time.monotonic() < deadline, "no trial started"
                time.sleep(0.5)
            time.sleep(2)  # a few epochs in

            postgres.stop()
            down = time.monotonic()
            during = c.get(f"/sweeps/{sweep_id}")
            ready = httpx.get(f"{server.url}/readyz", timeout=30)
            time.sleep(max(0.0, 6 - (time.monotonic() - down)))  # down for ~6 s: longer than a lease renewal
            postgres.start()

            assert during.status_code == 503 and "Retry-After" in during.headers, during.text
            assert ready.status_code == 503 and "database" in ready.text and "127.0.0.1" not in ready.text
            deadline = time.monotonic() + 240
            while (status := c.get(f"/sweeps/{sweep_id}").json()["status"]) in ("pending", "running"):
                assert time.monotonic() < deadline, "the sweep did not finish after the outage"
                time.sleep(1)
            assert status == "completed"
    finally:
        stop_server(server)
    with SqlStorage(postgres.url, migrate=False) as store:
        trials = store.trials(sweep_id)[0]
        assert [t.status for t in trials] == ["completed"] * 4
        assert [t.attempts for t in trials] == [1] * 4, "the outage cost an attempt"
        for t in trials:
            assert [e.epoch for e in store.epochs(t.id)] == list(range(1, 13))
    log = (tmp_path / "wdgrid-logs" / f"sweep-{sweep_id}.log").read_text()
    assert "retry" in log  # the driver rode the outage out: it did not die and restart
