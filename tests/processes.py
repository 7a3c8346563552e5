"""Real processes for tests (and ``bench/faults.py``): a ``wdgrid serve`` on loopback, a PostgreSQL server of one's
own that can be stopped mid-sweep, and a two-node Ray cluster on this machine, each in a session of its own so that a
test can take down everything it started."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- wdgrid serve -----------------------------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    token: str
    db: str
    folder: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


def start_server(
    folder: Path, db: str, token: str, env: dict[str, str] | None = None, settings: dict[str, str] | None = None
) -> Server:
    """``python -m service.cli serve`` on a free loopback port; returns once ``/healthz`` answers. ``settings``
    (``WDGRID_*`` variables) override the defaults here: one sweep at a time, the queue looked at every 0.5 s."""
    port = free_port()
    full = {**(env or os.environ), "WDGRID_DATABASE_URL": db, "WDGRID_API_TOKEN": token, "WDGRID_PORT": str(port)}
    full |= {"WDGRID_POLL_S": "0.5", "WDGRID_MAX_CONCURRENT_SWEEPS": "1"} | (settings or {})
    with (folder / "serve.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"], cwd=folder, env=full, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", token, db, folder, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not answer within 60 s")


def stop_server(server: Server) -> float:
    """SIGTERM, as a process manager stops it; returns how long it took to exit."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    return time.monotonic() - started


# --- A PostgreSQL server of one's own -------------------------------------------------------------------------
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@dataclass
class Postgres:
    """A PostgreSQL instance in ``folder`` on ``port`` that a test or bench may stop and start at will."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_as_postgres(), f"{PG_BIN[-1]}/pg_ctl", "-D", str(self.folder / "data"), "-w", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._ctl("-o", options, "-l", str(self.folder / "pg.log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")


def _as_postgres() -> list[str]:
    # PostgreSQL refuses to run as root: as root, run its tools as the postgres user.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def own_postgres() -> Iterator[Postgres | None]:
    """A PostgreSQL server of the caller's own (initdb in a temporary folder, a free port, trust auth), stopped and
    removed afterwards; None when this machine has no PostgreSQL server binaries."""
    if not PG_BIN or (os.geteuid() == 0 and not shutil.which("runuser")):
        yield None
        return
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="wdgrid-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(
        [*_as_postgres(), f"{PG_BIN[-1]}/initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pg = Postgres(folder, free_port())
    pg.start()
    try:
        yield pg
    finally:
        subprocess.run(
            [*_as_postgres(), f"{PG_BIN[-1]}/pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


# --- A Ray cluster ----------------------------------------------------------------------------------------------
def ray_start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``ray start ... --block`` with one CPU, in a session of its own."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--num-cpus=1", "--block", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = f"import ray; ray.init(address={address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0


@contextlib.contextmanager
def two_node_cluster(logs: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a second node, as docker-compose wires them: token auth with one shared ``RAY_AUTH_TOKEN``.
    Yields (address, the environment a driver needs to join)."""
    port = free_port()  # not 6379: Redis may hold it
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    nodes = [ray_start("--head", f"--port={port}", "--include-dashboard=false", env=env, log=logs / "head.log")]
    try:
        deadline = time.monotonic() + 60
        while alive_nodes(address, env) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()[-2000:]
            time.sleep(1)
        nodes.append(ray_start(f"--address={address}", env=env, log=logs / "worker.log"))
        while alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, env
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)
