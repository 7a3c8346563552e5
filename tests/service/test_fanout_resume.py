"""A driver SIGKILLed mid-sweep, run again: the sweep finishes with every cell finished exactly once, and the cells
that were running continue from the checkpoints the killed driver's trials left. Both runs are the real
``wdgrid run`` command, each with its own embedded Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy.exc

from results import SqlStorage

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
            try:
                with SqlStorage(db, migrate=False) as store:
                    if not store.list_sweeps()[1]:
                        continue
                    counts = store.status_counts(1)
                    running = store.trials(1, status="running")[0]
                    trained = max((len(store.epochs(t.id)) for t in running), default=0)
            except sqlalchemy.exc.OperationalError:  # the file exists, its tables not yet: `wdgrid run` migrates it
                continue
            if counts["completed"] >= 2 and trained >= 2:  # a running cell has checkpoints (one every epoch)
                break
        else:
            raise AssertionError(f"the first run never got going: {counts}")
        os.kill(first.pid, signal.SIGKILL)  # the driver alone: Ray's own reaper takes its embedded cluster down
        first.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # whatever of its embedded Ray is left
    with SqlStorage(db, migrate=False) as store:
        before = {t.id: t for t in store.trials(1)[0]}
        first_epochs = {t: store.epochs(t) for t, r in before.items() if r.status == "running"}
    done_before = {i for i, t in before.items() if t.status == "completed"}
    running_before = {i for i, t in before.items() if t.status == "running"}
    assert done_before and running_before

    second = wdgrid_run(spec, db, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert f"({len(done_before)} already finished" in out
    assert "Token authentication is enabled" not in err  # the embedded Ray's warning asks nothing of the user

    with SqlStorage(db, migrate=False) as store:
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
        # Continued, not retrained: the new attempt's first epochs are the checkpoint's, wall times included (a
        # second training of the same epochs would match in loss on the CPU, never to the nanosecond in time).
        resumed = 0
        for trial_id, old in first_epochs.items():
            new = [e for e in store.epochs(trial_id) if e.attempt == 2]
            if old:
                assert [(e.epoch, e.wall_time_s) for e in new[: len(old)]] == [(e.epoch, e.wall_time_s) for e in old]
                resumed += 1
        assert resumed >= 1
