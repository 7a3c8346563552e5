"""The controller's own Ray: one single-node Ray head that lives as long as the controller, and that every sweep's
driver joins, instead of an embedded Ray started (4-5 s, ~800 MB) by each driver.

Used when the controller has no ``RAY_ADDRESS``. The head is ``ray start --head --block`` (this machine's CPUs, no
dashboard) in a session of its own, with Ray's token authentication and a token made here for this head only: the
drivers get it in their environment, nobody else needs it. Sweeps that run at once share the head's CPUs, so two
sweeps submitted together both make progress without oversubscribing the cores.

Lifetime: :meth:`LocalRay.start` at the controller's start returns at once (the head takes a few seconds; the
scheduler starts no driver until :meth:`LocalRay.ready`); :meth:`LocalRay.stop` at the controller's stop. On Linux
the head also gets SIGTERM when the controller dies without stopping it (``kill -9``): Ray's reaper then takes the
head's processes down, its drivers lose their cluster and exit, and their sweeps resume when a controller starts
again — as a controller's stop leaves them. A head that dies while the controller runs is started again on the
scheduler's next look (:meth:`LocalRay.check`).

Start-up of a sweep: the head's workers import Ray Tune and the trainable as they start (``PRELOAD``), and the
standby driver has the raylet start a worker per trial slot ahead (``service.fanout.prestart_trial_workers``), so the
first trial takes a worker that is already warm. Ray's own prestart for the first driver is off: its workers (another
runtime environment than Tune's trial actors) would never be used by a trial.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["LocalRay"]

log = logging.getLogger(__name__)

RAY: Final = Path(sys.executable).parent / "ray"
_STARTED: Final = "Ray runtime started."  # what `ray start` prints once every process of the head runs
_PR_SET_PDEATHSIG: Final = 1
# What every worker process of the head imports before it takes work: Ray Tune (its trainable wrapper) and the
# trainable. With the workers a standby driver has the raylet start ahead (service.fanout.prestart_trial_workers), a
# sweep's first trial runs ~0.3 s after POST /sweeps (bench/sweep_start.py). Not torch: that would make each worker
# ~500 MB and ~2 s of CPU more before it takes work, and two sweeps submitted together started several seconds later.
PRELOAD: Final = ("ray.tune", "workers.trainable")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRay:
    """A Ray head of the controller's own; see the module docstring. ``log_path``: the head's output."""

    def __init__(self, log_path: Path, *, num_cpus: int | None = None) -> None:
        self.log_path = log_path
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.address = ""
        self._token = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._ready = False
        self._log_offset = 0  # where this start's output begins in the log (earlier starts wrote above it)
        self._failures = 0  # starts in a row that died before they were ready
        self._retry_at = 0.0

    def start(self) -> None:
        """Start the head (returns at once); a no-op while it runs."""
        if self._process is not None and self._process.poll() is None:
            return
        port = _free_port()
        self.address, self._token, self._ready = f"127.0.0.1:{port}", secrets.token_hex(32), False
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("WDGRID_")}
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self._token, "RAY_USAGE_STATS_ENABLED": "0"}
        env |= {"RAY_preload_python_modules": ",".join(PRELOAD), "RAY_prestart_worker_first_driver": "0"}
        command = [str(RAY), "start", "--head", f"--port={port}", f"--num-cpus={self.num_cpus}", "--block"]
        command += ["--include-dashboard=false", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._log_offset = out.tell()
            self._process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the controller's terminal is the controller's to handle
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._started_at = time.monotonic()
        log.info("started the controller's Ray at %s (pid %d)", self.address, self._process.pid)

    def ready(self) -> bool:
        """True once the head runs every process and accepts drivers."""
        if self._ready:
            return self._process is not None and self._process.poll() is None
        if self._process is None or self._process.poll() is not None:
            return False
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                self._ready = _STARTED in f.read().decode(errors="replace")
        except OSError:
            return False
        if self._ready:
            self._failures = 0
            log.info("the controller's Ray is up after %.1f s", time.monotonic() - self._started_at)
        return self._ready

    @property
    def down(self) -> bool:
        """True when the head is not running (it died, and is waiting to be started again)."""
        return self._process is None or self._process.poll() is not None

    def check(self) -> None:
        """Start the head again if it died (its log says why): at once if it had been up, else after 2, 4, 8 ...
        seconds (at most a minute) — a head that cannot start (a broken Ray install, no memory) is not restarted in
        a tight loop."""
        if self._process is None or self._process.poll() is None:
            return
        now = time.monotonic()
        if self._retry_at == 0.0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)  # whatever of its session Ray's reaper left
            self._failures = 0 if self._ready else self._failures + 1
            self._retry_at = now + (min(60.0, 2.0**self._failures) if self._failures else 0.0)
            log.warning(
                "the controller's Ray exited (%s; see %s); starting it again in %.0f s",
                self._process.returncode,
                self.log_path,
                self._retry_at - now,
            )
        if now >= self._retry_at:
            self._retry_at = 0.0
            self.start()

    def driver_environment(self) -> Mapping[str, str]:
        """What a driver needs to join the head."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self._token}

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the head and every Ray process it started (SIGTERM to ``ray start``, whose exit handler and reaper
        stop the rest; SIGKILL to its session after ``timeout`` seconds)."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the controller's Ray did not stop in %.0f s: killing it", timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its session is left
        process.wait(timeout)
