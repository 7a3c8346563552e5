"""The controller's queue: sweeps start in FIFO order (by id), at most ``max_concurrent_sweeps`` at once, each driven
by a process of its own (``python -m service.cli drive ID``) that runs ``service.fanout.run_sweep``.

Why a process per sweep: Ray never starts inside the web server (``ray.init`` in uvicorn's main thread replaces its
SIGTERM handler, and two ``Tuner.fit`` in one process race on Tune's registry), a driver's crash cannot take the API
down, and stopping a sweep's driver is stopping a process.

The store is the only state: every ``poll_s`` the scheduler looks at running and pending sweeps. A running sweep
whose driver is alive (its lease holds and, on this host, its process exists) is left alone — it may have been
started by a controller before a restart, or by ``wdgrid run``. A running sweep without a live driver (the
controller was stopped or killed mid-sweep) gets a new driver first: it takes the sweep over and re-queues the cells
that were running. Then pending sweeps start while slots are free. Stopping the scheduler kills its drivers' process
groups; their sweeps stay ``running`` and resume when a controller starts again.

A sweep usually goes to the *standby driver*: one ``wdgrid standby`` process the scheduler keeps started ahead,
which has imported Ray Tune and joined Ray, and waits for a sweep id on its stdin; a new standby is started as soon
as one is handed a sweep. Without a live standby (it died, or the Ray it joined was restarted) a driver is started
the ordinary way.

Drivers join the controller's own Ray (``service.local_ray``; none is started before it is up) or the cluster at
``RAY_ADDRESS``; with ``WDGRID_LOCAL_RAY=false`` each starts an embedded Ray of its own, in its process group.

A driver that exits with an error before it took its sweep (a Ray cluster that cannot be joined, a trial that fits
no node) leaves the sweep pending: it is retried after 2, 4, 8 ... ``poll_s`` (at most a minute), and after
``MAX_START_FAILURES`` failures in a row the sweep is marked failed with the driver's last log line as its error, so
that it stops holding a slot and the user sees why (``POST /sweeps/{id}/resume`` queues it again).

A driver that dies while it runs its sweep (killed, out of memory, a full disk, a database gone for longer than its
retries) is restarted with the same back-off; a restart after which the sweep finished more cells counts as progress
and resets the count. After ``MAX_RESTARTS`` restarts in a row without a cell finished, the sweep is failed with the
driver's last log line: a driver that cannot make progress does not restart forever while the sweep says running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from results import Storage, SweepRecord, TransitionError
from service.disk import full_disks, written_folders
from service.fanout import holder_dead  # light: imports neither torch nor Ray until a sweep runs
from service.local_ray import LocalRay
from service.settings import Settings

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

MAX_START_FAILURES: Final = 3
MAX_RESTARTS: Final = 5
DRIVER: Final = (sys.executable, "-m", "service.cli", "drive")
STANDBY: Final = (sys.executable, "-m", "service.cli", "standby")


def _driver_alive(sweep: SweepRecord, now: datetime) -> bool:
    if sweep.driver is None or sweep.driver_lease_expires_at is None or sweep.driver_lease_expires_at <= now:
        return False
    return not holder_dead(sweep.driver)


class Scheduler:
    """Starts and stops sweep drivers; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        *,
        log_dir: Path,
        driver: Sequence[str] = DRIVER,
        standby: Sequence[str] | None = None,
        local_ray: LocalRay | None = None,
    ) -> None:
        """``driver``: the command a sweep's driver runs, its id appended (tests give a stand-in process).
        ``standby``: the command of a driver started ahead of its sweep (``STANDBY``), the log folder appended; it
        reads the sweep id on stdin (None: every driver starts when its sweep does). ``local_ray``: the
        controller's own Ray, which every driver joins (none: each driver embeds one, or joins the settings'
        ``ray_address``)."""
        self.settings, self.store, self.log_dir, self.driver = settings, store, log_dir, tuple(driver)
        self.standby = None if standby is None else tuple(standby)
        self.local_ray = local_ray
        self._standby: subprocess.Popen[bytes] | None = None  # the driver kept ready, with the environment it got
        self._standby_env: dict[str, str] = {}
        self._standby_failures, self._standby_retry_at = 0, 0.0
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self._failures: dict[int, tuple[int, float]] = {}  # sweep id -> (start failures in a row, retry after)
        self._finished_at_spawn: dict[int, int] = {}  # sweep id -> cells finished when its driver started
        self._failing: dict[int, str] = {}  # sweep id -> why it fails, until the store takes the write (a full disk)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wdgrid-scheduler", daemon=True)

    @property
    def standby_pid(self) -> int | None:
        """The process id of the driver kept ready for the next sweep (None: none right now)."""
        return None if self._standby is None else self._standby.pid

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now (a sweep was submitted or resumed)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling and kill every driver this scheduler started (their sweeps resume on the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        for sweep_id, child in list(self.children.items()):
            if child.poll() is None:
                log.info("stopping the driver of sweep %d (pid %d)", sweep_id, child.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout)
        self.children.clear()
        self._drop_standby()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the store may be briefly unreachable: keep scheduling
                log.exception("scheduler tick failed")
            starting = self.local_ray is not None and not self.local_ray.ready()
            self._wake.wait(min(0.2, self.settings.poll_s) if starting else self.settings.poll_s)
            self._wake.clear()

    def tick(self) -> None:
        """One look at the queue: forget exited drivers, resume orphaned running sweeps, start pending ones."""
        self._mark_failing()
        for sweep_id, child in list(self.children.items()):
            if child.poll() is not None:
                log.info("driver of sweep %d exited with %s", sweep_id, child.returncode)
                del self.children[sweep_id]
                self._exited(sweep_id, child.returncode)
        now = datetime.now(UTC)
        busy = set(self.children)
        orphans = []
        for sweep in self._all("running"):
            if sweep.id in busy or sweep.id in self._failing:
                continue
            if _driver_alive(sweep, now):
                busy.add(sweep.id)  # driven elsewhere: it still takes a slot
            else:
                orphans.append(sweep)
        if self.local_ray is not None:
            self.local_ray.check()
            if not self.local_ray.ready():
                return  # no driver before the Ray it joins is up (looked at again within 0.2 s)
        for sweep in [*orphans, *self._all("pending")]:
            if len(busy) >= self.settings.max_concurrent_sweeps or self._stop.is_set():
                break
            if sweep.id in busy or sweep.id in self._failing:  # its driver is starting; or given up on
                continue
            if self._failures.get(sweep.id, (0, 0.0))[1] > time.monotonic():
                continue  # backing off after a failed start; later sweeps may go first meanwhile
            self._spawn(sweep.id)
            busy.add(sweep.id)
        self._keep_standby()

    def _finished(self, sweep_id: int) -> int:
        counts = self.store.status_counts(sweep_id)
        return counts["completed"] + counts["diverged"] + counts["failed"]

    def _exited(self, sweep_id: int, code: int) -> None:
        """Book-keeping for a driver that exited: count a failed start, or a death without progress while it ran the
        sweep; back off, and give up after MAX_START_FAILURES (or MAX_RESTARTS) in a row."""
        sweep = self.store.get_sweep(sweep_id)
        before = self._finished_at_spawn.pop(sweep_id, None)
        if code == 0 or sweep.status not in ("pending", "running"):
            self._failures.pop(sweep_id, None)  # it ran to its end (or was cancelled): not a failure
            return
        starting = sweep.status == "pending"
        if not starting and (before is None or self._finished(sweep_id) > before):
            self._failures.pop(sweep_id, None)  # it died, but after progress: restart it as if for the first time
        failures = self._failures.get(sweep_id, (0, 0.0))[0] + 1
        if failures < (MAX_START_FAILURES if starting else MAX_RESTARTS):
            delay = min(60.0, self.settings.poll_s * 2**failures)
            self._failures[sweep_id] = (failures, time.monotonic() + delay)
            what = "failed to start" if starting else "died without finishing a cell"
            log.warning("the driver of sweep %d %s (exit %s); retrying in %.1f s", sweep_id, what, code, delay)
            return
        self._failures.pop(sweep_id, None)
        if starting:
            why = f"its driver failed to start {failures} times (exit {code}): {self._last_line(sweep_id)}"
        else:
            why = (
                f"its driver exited {failures} times in a row without finishing a cell (exit {code}): "
                f"{self._last_line(sweep_id)}"
            )
        if full := full_disks(written_folders(self.settings, self.log_dir), self.settings.min_free_disk_mib):
            why += f"; the disk is full ({', '.join(full)})"
        log.error("sweep %d: %s", sweep_id, why)
        self._failing[sweep_id] = why
        self._mark_failing()

    def _mark_failing(self) -> None:
        """Fail the sweeps given up on. A store that cannot take the write (a full disk, a database still down)
        leaves them here: no driver is started for them, and the write is tried again on the next tick."""
        for sweep_id, why in list(self._failing.items()):
            try:
                self.store.set_sweep_status(sweep_id, "failed", error=why)
            except TransitionError:
                pass  # cancelled meanwhile: leave it
            except Exception as exc:
                log.warning("sweep %d: cannot mark it failed yet (%s); trying again", sweep_id, type(exc).__name__)
                continue
            del self._failing[sweep_id]

    def _last_line(self, sweep_id: int) -> str:
        path = self.log_dir / f"sweep-{sweep_id}.log"
        try:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"see {path}"
        return f"{lines[-1].strip()[:500]} (see {path})" if lines else f"see {path}"

    def _all(self, status: str) -> list[SweepRecord]:
        out: list[SweepRecord] = []
        while True:
            page, count = self.store.list_sweeps(status=status, offset=len(out), limit=500)  # type: ignore[arg-type]
            out += page
            if not page or len(out) >= count:
                return out

    def _environment(self) -> dict[str, str]:
        env = self.settings.driver_environment(os.environ) | {"WDGRID_DATABASE_URL": self.store.url}
        if self.local_ray is not None:
            env |= self.local_ray.driver_environment()
        return env

    def _spawn(self, sweep_id: int) -> None:
        env = self._environment()
        self._finished_at_spawn[sweep_id] = self._finished(sweep_id)
        if (standby := self._hand_over(sweep_id, env)) is not None:
            self.children[sweep_id] = standby
            log.info("sweep %d: handed to the standby driver (pid %d)", sweep_id, standby.pid)
            return
        with (self.log_dir / f"sweep-{sweep_id}.log").open("ab") as out:
            self.children[sweep_id] = subprocess.Popen(
                [*self.driver, str(sweep_id)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() takes it down (and an embedded Ray with it)
            )
        log.info("sweep %d: driver started (pid %d)", sweep_id, self.children[sweep_id].pid)

    # --- The standby driver ------------------------------------------------------------------------------------
    # A sweep's driver spends its first ~2 s importing Ray Tune and joining Ray. The scheduler keeps one driver that
    # has done that (``wdgrid standby``) and hands it the next sweep to start.

    def _hand_over(self, sweep_id: int, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Give ``sweep_id`` to the standby driver when it is alive and joined the Ray ``env`` names (a restarted
        head has a new address and token); None: start a driver the ordinary way."""
        standby, self._standby = self._standby, None
        if standby is None:
            return None
        if standby.poll() is not None or self._standby_env != env:
            self._discard(standby)
            return None
        assert standby.stdin is not None
        try:
            standby.stdin.write(f"{sweep_id}\n".encode())
            standby.stdin.close()
        except OSError:  # it died just now
            self._discard(standby)
            return None
        self._standby_failures = 0
        return standby

    def _keep_standby(self) -> None:
        """Start a standby driver when there is none: a dead one is replaced after 2, 4, 8 ... times ``poll_s`` (at
        most a minute) without a sweep handed over meanwhile; one that joined a Ray since restarted, at once."""
        if self.standby is None or self._stop.is_set() or self.settings.max_concurrent_sweeps < 1:
            return
        env = self._environment()
        if self._standby is not None:
            if self._standby.poll() is None and self._standby_env == env:
                return
            if self._standby.poll() is not None:
                self._standby_failures += 1
                delay = min(60.0, self.settings.poll_s * 2**self._standby_failures)
                self._standby_retry_at = time.monotonic() + delay
                log.warning(
                    "the standby driver exited with %s (see %s); next one in %.0f s",
                    self._standby.returncode,
                    self.log_dir / "standby.log",
                    delay,
                )
            self._drop_standby()
        if time.monotonic() < self._standby_retry_at:
            return
        with (self.log_dir / "standby.log").open("ab") as out:
            self._standby = subprocess.Popen(
                [*self.standby, str(self.log_dir)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._standby_env = env

    def _drop_standby(self) -> None:
        standby, self._standby = self._standby, None
        if standby is not None:
            self._discard(standby)

    @staticmethod
    def _discard(child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(10)
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
