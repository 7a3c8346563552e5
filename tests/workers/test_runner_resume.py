"""A driver SIGKILLed mid-sweep, run again: the sweep finishes with every cell finished exactly once. Both runs are
the real ``wdgrid run`` command, each with its own embedded Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from results import Storage

WDGRID = Path(sys.executable).parent / "wdgrid"
EPOCHS = 25
SPEC = {
    "name": "resume test",
    "dataset": "mnist1d",
    "model": "mlp",
    "epochs": EPOCHS,
    "batch_size": 128,
    "schedule": {"name": "cosine"},
    "seeds": [0],
    "grids": [{"optimizer": "sgd", "lr": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], "weight_decay": [0.0]}],
}


def wdgrid_run(spec: Path, db: str, **popen: object) -> subprocess.Popen[str]:
    args = [str(WDGRID), "run", str(spec), "--db", db, "--cells-per-trial", "1", "--checkpoint-interval", "0"]
    return subprocess.Popen(args, text=True, env={**os.environ, "COLUMNS": "120"}, **popen)  # type: ignore[call-overload]


def test_a_killed_driver_resumes_with_every_cell_exactly_once(tmp_path: Path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
    first = wdgrid_run(spec, db, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if not (tmp_path / "wdgrid.db").exists():
                continue
            with Storage(db, migrate=False) as store:
                if not store.list_sweeps()[1]:
                    continue
                counts = store.status_counts(1)
            if counts["completed"] >= 2 and counts["running"] >= 1:
                break
        else:
            raise AssertionError(f"the first run never got going: {counts}")
        os.kill(first.pid, signal.SIGKILL)  # the driver alone: Ray's own reaper takes its embedded cluster down
        first.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # whatever of its embedded Ray is left
    with Storage(db, migrate=False) as store:
        before = {t.id: t for t in store.trials(1)[0]}
    done_before = {i for i, t in before.items() if t.status == "completed"}
    running_before = {i for i, t in before.items() if t.status == "running"}
    assert done_before and running_before

    second = wdgrid_run(spec, db, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert f"({len(done_before)} already finished" in out

    with Storage(db, migrate=False) as store:
        assert store.get_sweep(1).status == "completed"
        for t in store.trials(1)[0]:
            assert t.status == "completed"
            attempts = store.attempts(t.id)
            assert [a.status for a in attempts].count("completed") == 1  # finished exactly once
            if t.id in done_before:  # kept, not retrained
                assert t.attempts == 1 and t.finished_at == before[t.id].finished_at
            if t.id in running_before:  # its attempt died with the driver; a new one finished it
                assert [a.status for a in attempts] == ["lost", "completed"]
            epochs = [(e.attempt, e.epoch) for e in store.epochs(t.id) if e.attempt == t.attempts]
            assert epochs == [(t.attempts, e) for e in range(1, EPOCHS + 1)]
