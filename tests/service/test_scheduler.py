"""The controller's queue on a real store with real child processes; the driver is a stand-in process (a real
driver starts Ray, which the API tests cover), so these check only what the scheduler decides: FIFO order, one
driver per sweep however long it takes to start, stopping kills them, and a driver that cannot start backs off and
then fails its sweep with the reason."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from results import SqlStorage
from service.scheduler import MAX_START_FAILURES, Scheduler
from service.settings import Settings
from sweeps import expand
from tests.factories import make_spec

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")  # a driver that has not taken its sweep yet
BROKEN = (sys.executable, "-c", "import sys; print('wdgrid: cannot join the Ray cluster at head:6380'); sys.exit(1)")


def test_sweeps_start_in_fifo_order_with_one_driver_each_and_stop_kills_them(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        first = store.create_sweep(expand(make_spec(name="first"))).id
        settings = Settings(database_url=store.url, max_concurrent_sweeps=2, poll_s=0.05)
        scheduler = Scheduler(settings, store, log_dir=tmp_path, driver=SLEEPER)
        try:
            scheduler.tick()
            pid = scheduler.children[first].pid
            for _ in range(5):  # the sweep stays pending while its driver starts: a free slot must not start it again
                scheduler.tick()
            assert list(scheduler.children) == [first] and scheduler.children[first].pid == pid
            later = [store.create_sweep(expand(make_spec(name=f"s{i}", seeds=[i]))).id for i in range(2)]
            scheduler.tick()
            children = dict(scheduler.children)
            assert sorted(children) == [first, later[0]]  # FIFO: the older of the two waiting sweeps
        finally:
            scheduler.stop()
        assert all(c.poll() is not None for c in children.values())
        assert scheduler.children == {}


def test_a_driver_that_cannot_start_backs_off_then_fails_its_sweep_with_the_reason(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        sweep = store.create_sweep(expand(make_spec()))
        settings = Settings(database_url=store.url, max_concurrent_sweeps=1, poll_s=0.05)
        scheduler = Scheduler(settings, store, log_dir=tmp_path, driver=BROKEN)
        starts, deadline = 0, time.monotonic() + 30
        while store.get_sweep(sweep.id).status == "pending":
            assert time.monotonic() < deadline, "the sweep never failed"
            before = set(scheduler.children)
            scheduler.tick()
            starts += len(set(scheduler.children) - before)
            time.sleep(0.02)
        failed = store.get_sweep(sweep.id)
        assert failed.status == "failed"
        assert starts == MAX_START_FAILURES  # retried, with pauses between, not once per tick
        assert failed.error is not None
        assert f"failed to start {MAX_START_FAILURES} times" in failed.error
        assert "cannot join the Ray cluster at head:6380" in failed.error
        assert store.resume_sweep(sweep.id) == 0 and store.get_sweep(sweep.id).status == "pending"  # user retries
        scheduler.stop()
