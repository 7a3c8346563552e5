"""A full disk mid-sweep, on a filesystem of the test's own (a 32 MiB tmpfs holding the SQLite store and Ray Tune's
checkpoints; the controller's and drivers' logs stay on the ordinary disk, as journald or a log volume would hold
them). A real ``wdgrid serve`` drives a sweep on real Ray workers; the test fills the tmpfs. While it is full
``/readyz`` says the disk is full (naming no path); the driver rides out its retries, dies, and is restarted with
back-off; after ``MAX_RESTARTS`` without a cell finished the controller gives up, and the sweep is failed with the
reason as soon as the store can take that write. Freed and resumed, every cell trains to its end once: no epoch is
stored twice. Needs ``mount`` (root, as in CI's container); skipped where the machine does not allow it."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from results import SqlStorage
from service.scheduler import MAX_RESTARTS
from tests.factories import spec_data
from tests.processes import Server, start_server, stop_server

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "volume"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(folder)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs of the test's own here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)


def test_a_full_disk_fails_the_sweep_with_the_reason_and_loses_nothing(volume: Path, tmp_path: Path):
    db = f"sqlite:///{volume / 'wdgrid.db'}"
    settings = {"WDGRID_TUNE_DIR": str(volume / "tune"), "WDGRID_DB_RETRY_S": "3", "WDGRID_MIN_FREE_DISK_MIB": "4"}
    server: Server = start_server(tmp_path, db, secrets.token_hex(16), settings=settings)
    try:
        with server.client() as c:
            assert httpx.get(f"{server.url}/readyz").json()["disk"] == "ok"
            grid = {"optimizer": "adamw", "lr": [1e-3, 2e-3], "weight_decay": [1e-4, 1e-3]}
            sweep_id = c.post("/sweeps", json=spec_data(epochs=12, seeds=[0], grids=[grid])).json()["id"]
            trials = f"/sweeps/{sweep_id}/trials"
            wait_for("a trial", lambda: any(t["status"] == "running" for t in c.get(trials).json()["data"]), 120)
            time.sleep(2)  # a few epochs in

            filler = volume / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, check=False)
            ready = httpx.get(f"{server.url}/readyz", timeout=30)
            assert ready.status_code == 503, ready.text
            assert ready.json()["disk"].startswith("full (") and "store: " in ready.json()["disk"]
            assert str(volume) not in ready.text and "tmp" not in ready.text  # names what is full, not where
            log = tmp_path / "serve.log"
            wait_for(
                "the controller to give up", lambda: f"sweep {sweep_id}: its driver exited" in log.read_text(), 240
            )
            assert log.read_text().count(f"the driver of sweep {sweep_id} died") == MAX_RESTARTS - 1  # bounded
            assert c.get(f"/sweeps/{sweep_id}").json()["status"] == "running"  # the store cannot take "failed" yet

            filler.unlink()
            wait_for("the sweep failed", lambda: c.get(f"/sweeps/{sweep_id}").json()["status"] == "failed", 60)
            error = c.get(f"/sweeps/{sweep_id}").json()["error"]
            assert "database or disk is full" in error and "the disk is full (" in error, error
            assert httpx.get(f"{server.url}/readyz").json()["disk"] == "ok"

            assert c.post(f"/sweeps/{sweep_id}/resume").status_code == 200
            wait_for(
                "the resumed sweep",
                lambda: c.get(f"/sweeps/{sweep_id}").json()["status"] not in ("pending", "running"),
                240,
            )
            assert c.get(f"/sweeps/{sweep_id}").json()["status"] == "completed"
    finally:
        stop_server(server)
    with SqlStorage(db, migrate=False) as store:
        trials_, _ = store.trials(sweep_id)
        assert [t.status for t in trials_] == ["completed"] * 4
        for t in trials_:  # the attempt the full disk stopped is over; the last one trained every epoch, each once
            assert [e.epoch for e in store.epochs(t.id, attempt=t.attempts)] == list(range(1, 13))
        seen = [(e.trial_id, e.attempt, e.epoch) for e in store.sweep_epochs(sweep_id)]
        assert len(seen) == len(set(seen))
