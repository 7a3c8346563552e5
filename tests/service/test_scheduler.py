"""The controller's queue on a real store with real child processes; the driver is a stand-in process (a real
driver starts Ray, which the API tests cover), so these check only what the scheduler decides: FIFO order, one
driver per sweep however long it takes to start, stopping kills them, and a driver that cannot start backs off and
then fails its sweep with the reason; the standby driver is handed the next sweep, replaced when it dies, and
stopped with the scheduler."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from results import SqlStorage
from service.scheduler import MAX_RESTARTS, MAX_START_FAILURES, Scheduler
from service.settings import Settings
from sweeps import expand
from tests.factories import make_spec

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")  # a driver that has not taken its sweep yet
# A driver that takes its sweep, finishes (with FINISH=1 in its environment) one cell, and dies: a full disk.
DIES_RUNNING = (
    sys.executable,
    "-c",
    "import os, socket, sys\n"
    "from results import FinalMetrics, SqlStorage\n"
    "from service.fanout import holder_dead\n"
    "store, sweep = SqlStorage(os.environ['WDGRID_DATABASE_URL'], migrate=False), int(sys.argv[1])\n"
    "store.acquire_sweep(sweep, f'{socket.gethostname()}:{os.getpid()}:x', lease_seconds=60, holder_dead=holder_dead)\n"
    "if store.get_sweep(sweep).status == 'pending': store.set_sweep_status(sweep, 'running')\n"
    "if os.environ.get('FINISH') and (t := store.claim_trial(sweep, lease_seconds=60)):\n"
    "    store.finish_trial(t.id, t.attempts, 'completed', final=FinalMetrics(test_error=1.0))\n"
    "print('OSError: [Errno 28] No space left on device'); sys.exit(1)\n",
)
# A standby: waits for a sweep id on stdin (the log folder is its argument), writes "pid id" to a file, then runs.
STANDBY = (
    sys.executable,
    "-c",
    "import os, sys, time\n"
    "line = sys.stdin.readline()\n"
    "open(os.path.join(sys.argv[1], 'handed'), 'a').write(f'{os.getpid()} {line}')\n"
    "time.sleep(60)\n",
)
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


def run_until_failed(store: SqlStorage, sweep_id: int, scheduler: Scheduler, timeout: float = 60) -> int:
    starts, deadline = 0, time.monotonic() + timeout
    while store.get_sweep(sweep_id).status in ("pending", "running"):
        assert time.monotonic() < deadline, "the sweep never failed"
        before = {k: c.pid for k, c in scheduler.children.items()}
        scheduler.tick()
        starts += sum(1 for k, c in scheduler.children.items() if before.get(k) != c.pid)
        time.sleep(0.02)
    return starts


def test_a_driver_that_dies_while_running_is_restarted_with_back_off_then_fails_its_sweep(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        sweep = store.create_sweep(expand(make_spec()))
        settings = Settings(database_url=store.url, max_concurrent_sweeps=1, poll_s=0.05)
        scheduler = Scheduler(settings, store, log_dir=tmp_path, driver=DIES_RUNNING)
        started = time.monotonic()
        starts = run_until_failed(store, sweep.id, scheduler)
        failed = store.get_sweep(sweep.id)
        assert failed.status == "failed" and starts == MAX_RESTARTS
        # backed off: 0.1 + 0.2 + 0.4 + 0.8 s between the restarts, not one restart per 50 ms tick
        assert time.monotonic() - started >= 1.5
        assert (
            failed.error is not None
            and f"exited {MAX_RESTARTS} times in a row without finishing a cell" in failed.error
        )
        assert "No space left on device" in failed.error


def test_a_driver_that_dies_after_progress_starts_its_count_again(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FINISH", "1")  # each run finishes one cell, then dies
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        spec = make_spec(seeds=[0], grids=[{"optimizer": "adamw", "lr": [0.001], "weight_decay": [0.0, 0.1]}])
        sweep = store.create_sweep(expand(spec))  # 2 cells: 2 runs make progress, then MAX_RESTARTS do not
        settings = Settings(database_url=store.url, max_concurrent_sweeps=1, poll_s=0.05)
        scheduler = Scheduler(settings, store, log_dir=tmp_path, driver=DIES_RUNNING)
        starts = run_until_failed(store, sweep.id, scheduler)
        assert store.get_sweep(sweep.id).status == "failed"
        assert store.status_counts(sweep.id)["completed"] == 2 and starts == 2 + MAX_RESTARTS - 1


def test_the_standby_driver_takes_the_next_sweep_and_another_is_started(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        settings = Settings(database_url=store.url, max_concurrent_sweeps=2, poll_s=0.05)
        scheduler = Scheduler(settings, store, log_dir=tmp_path, driver=SLEEPER, standby=STANDBY)
        try:
            scheduler.tick()  # an empty queue: a standby is started for the sweep to come
            standby = scheduler.standby_pid
            assert standby is not None and scheduler.children == {}
            scheduler.tick()
            assert scheduler.standby_pid == standby  # one standby, not one per look
            sweep = store.create_sweep(expand(make_spec())).id
            scheduler.tick()
            driver = scheduler.children[sweep]
            assert driver.pid == standby and scheduler.standby_pid not in (None, standby)
            handed = tmp_path / "handed"
            deadline = time.monotonic() + 10
            while not handed.exists() or not handed.read_text().endswith("\n"):
                assert time.monotonic() < deadline, "the standby never read its sweep id"
                time.sleep(0.05)
            assert handed.read_text() == f"{standby} {sweep}\n"
            processes = [driver, scheduler._standby]
        finally:
            scheduler.stop()
        assert all(p is not None and p.poll() is not None for p in processes)  # the standby stops with the rest
        assert scheduler.standby_pid is None


def test_a_dead_standby_is_replaced_with_back_off_and_its_sweep_gets_an_ordinary_driver(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        settings = Settings(database_url=store.url, max_concurrent_sweeps=1, poll_s=0.05)
        dies = (sys.executable, "-c", "import sys; print('wdgrid: cannot join the Ray cluster'); sys.exit(1)")
        scheduler = Scheduler(settings, store, log_dir=tmp_path, driver=SLEEPER, standby=dies)
        try:
            started: set[int] = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(started) < 4:
                scheduler.tick()
                if scheduler.standby_pid is not None:
                    started.add(scheduler.standby_pid)
                time.sleep(0.02)
            # 0.1 + 0.2 + 0.4 s between the starts, not one start per 20 ms look
            assert len(started) == 4 and time.monotonic() - (deadline - 30) >= 0.7
            assert "cannot join the Ray cluster" in (tmp_path / "standby.log").read_text()
            while (pid := scheduler.standby_pid) is None:
                scheduler.tick()
                time.sleep(0.02)
            scheduler._standby.wait(10)  # type: ignore[union-attr]  # the standby has died: the sweep cannot go to it
            sweep = store.create_sweep(expand(make_spec())).id
            scheduler.tick()
            assert scheduler.children[sweep].pid != pid and scheduler.children[sweep].args == [*SLEEPER, str(sweep)]
        finally:
            scheduler.stop()
