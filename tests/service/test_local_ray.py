"""The controller's own Ray (``service.local_ray``), a real ``ray start --head``: a driver with its environment joins
it and runs a task; without the token it cannot; a head that dies is started again; stopping it, or killing the
process that started it, takes every process of the head down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.local_ray import LocalRay

pytestmark = pytest.mark.timeout(300)

JOIN = "import ray; ray.init(); print('sum', ray.get(ray.remote(lambda: 1 + 1).remote()))"


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _session_alive(pid: int) -> bool:
    """Whether any process of the session ``pid`` leads is still alive (the head's raylet, GCS, reaper ...)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.getsid(int(entry.name)) == pid and state != "Z":  # a zombie is gone, only not yet reaped
                    return True
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                continue
    return False


def test_a_driver_joins_with_the_head_environment_and_only_with_it(tmp_path: Path):
    head = LocalRay(tmp_path / "ray-head.log", num_cpus=1)
    head.start()
    try:
        _wait(head.ready, 120, (tmp_path / "ray-head.log").read_text()[-2000:])
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path)}

        def join(**changes: str) -> subprocess.CompletedProcess[str]:
            env = base | dict(head.driver_environment()) | changes
            return subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True, timeout=120)

        joined = join()
        assert joined.returncode == 0 and "sum 2" in joined.stdout, joined.stderr[-2000:]
        assert join(RAY_AUTH_TOKEN="0" * 64).returncode != 0  # another token: refused

        # A head that dies while the controller runs is started again (at once: it had been up), on a new port.
        first = (head.address, head._process.pid)  # type: ignore[union-attr]
        os.kill(first[1], signal.SIGKILL)
        _wait(lambda: head.down, 30, "the killed head to be seen down")

        def restarted() -> bool:
            head.check()  # what the scheduler does on each look
            return head.ready()

        _wait(restarted, 120, (tmp_path / "ray-head.log").read_text()[-2000:])
        assert head.address != first[0] and not _accepts(first[0])
        again = join()
        assert again.returncode == 0 and "sum 2" in again.stdout, again.stderr[-2000:]
        _wait(lambda: not _session_alive(first[1]), 30, "the killed head's processes to go")
        pid = head._process.pid  # type: ignore[union-attr]
    finally:
        head.stop()
    assert not _accepts(head.address)
    _wait(lambda: not _session_alive(pid), 30, "the head's processes outlived its stop()")


@pytest.mark.skipif(sys.platform != "linux", reason="the head dies with its starter through PR_SET_PDEATHSIG")
def test_the_head_dies_with_the_controller_that_started_it(tmp_path: Path):
    starter = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from service.local_ray import LocalRay
        head = LocalRay(Path({str(tmp_path / "ray-head.log")!r}), num_cpus=1)
        head.start()
        while not head.ready():
            time.sleep(0.2)
        print(head.address, head._process.pid, flush=True)
        time.sleep(600)
        """
    )
    controller = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    try:
        line = controller.stdout.readline().split()  # type: ignore[union-attr]
        assert len(line) == 2, (tmp_path / "ray-head.log").read_text()[-2000:]
        address, pid = line[0], int(line[1])
        assert _accepts(address)
        controller.send_signal(signal.SIGKILL)  # no stop(): as `kill -9` leaves it
        controller.wait(30)
        _wait(lambda: not _accepts(address) and not _session_alive(pid), 60, "the head outlived its controller")
    finally:
        if controller.poll() is None:
            controller.kill()
