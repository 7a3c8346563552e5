"""``workers.trainable`` as the driver sees it: handing ``train_chunk`` to Tune imports no torch (that is the
worker's to pay), so a sweep's driver starts seconds sooner; and what a chunk reports, with ``ray.tune`` stood in for
(every epoch once, in reports at most ``REPORT_EVERY_S`` apart). Training through Tune is tested in
``tests/service/test_fanout.py``."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from workers import trainable


def test_the_driver_gets_the_trainable_without_importing_torch():
    probe = (
        "import sys; import service.fanout, service._result_writer; "
        "from workers.trainable import CELLS_FILE, train_chunk; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


class _Tune:
    """What ``train_chunk`` uses of ``ray.tune``, recording each report with the time it was made."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, dict[str, Any]]] = []
        self.Checkpoint = SimpleNamespace(from_directory=lambda folder: folder)

    def report(self, message: dict[str, Any], checkpoint: Any = None) -> None:
        self.reports.append((time.monotonic(), message))

    def get_checkpoint(self) -> None:
        return None


def _chunk(epochs: int) -> dict[str, Any]:
    base = {"dataset": "mnist1d", "model": "mlp", "optimizer": "sgdw", "weight_decay": 5e-4, "batch_size": 128}
    cells = [{"trial_id": 10 + i, "config": base | {"lr": lr, "epochs": epochs}} for i, lr in enumerate((0.05, 0.1))]
    return {
        "cells": cells,
        "batched": None,
        "threads": 1,
        "data_dir": None,
        "checkpoint_interval_s": 3600,  # no checkpoint in these runs: only the report interval decides
        "time_limit_s": None,
        "hang_grace_s": None,
        "resume_from": None,
    }


@pytest.mark.parametrize("every_s", [0.0, 0.3])
def test_a_chunk_reports_every_epoch_once_in_reports_at_most_every_interval(monkeypatch, every_s: float):
    fake = _Tune()
    monkeypatch.setattr(trainable, "tune", fake)
    monkeypatch.setattr(trainable, "_where", lambda: {"host": "here", "node": None, "pid": 1})
    monkeypatch.setattr(trainable, "REPORT_EVERY_S", every_s)
    epochs = 12
    started = time.monotonic()
    trainable.train_chunk({"chunk": _chunk(epochs)})
    took = time.monotonic() - started
    messages = [m for _, m in fake.reports]
    reported = [(i, m["epoch"]) for message in messages for i, m in message["epochs"]]
    assert sorted(reported) == [(i, e) for i in (0, 1) for e in range(1, epochs + 1)]  # each epoch once
    assert len(reported) == len(set(reported))
    finished = [i for message in messages for i, _ in message["finished"]]
    assert sorted(finished) == [0, 1] and messages[-1]["finished"]  # each cell once, the last report ends the chunk
    if every_s == 0:
        # The cells train as one batched model: a report per epoch boundary, and one as the chunk's cells finish.
        assert len(messages) == epochs + 1
    else:
        # No report sooner than the interval after the one before, except the one that finishes the cells.
        times = [t for t, m in fake.reports if not m["finished"]]
        assert all(b - a >= every_s for a, b in zip([started, *times], times, strict=False))
        assert len(messages) <= took / every_s + 2 < epochs, (len(messages), took)
