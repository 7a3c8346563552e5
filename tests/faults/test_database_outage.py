"""A database outage mid-sweep, on a PostgreSQL instance of the test's own (initdb'd in a temporary folder, on a
port of its own — never the shared server): stopped for several seconds while a real ``wdgrid serve`` drives a
sweep on real Ray workers, then started again. The driver rides it out (its store retries with back-off), so every
cell trains exactly once with one attempt and all its epochs; meanwhile the API answers 503 with Retry-After and
``/readyz`` says the database is down; afterwards everything reads back."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from results import SqlStorage
from tests.factories import spec_data
from tests.processes import free_port, start_server, stop_server

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@dataclass
class Postgres:
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


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    if not PG_BIN or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("PostgreSQL's server binaries are not installed here (.ci/run installs them)")
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


def test_a_database_outage_mid_sweep_loses_and_repeats_nothing(postgres: Postgres, tmp_path: Path):
    server = start_server(tmp_path, postgres.url, secrets.token_hex(16))
    try:
        with server.client() as c:
            spec = spec_data(
                epochs=12,
                seeds=[0],
                grids=[{"optimizer": "adamw", "lr": [1e-3, 2e-3], "weight_decay": [1e-4, 1e-3]}],
            )
            sweep_id = c.post("/sweeps", json=spec).json()["id"]
            deadline = time.monotonic() + 120
            while not any(t["status"] == "running" for t in c.get(f"/sweeps/{sweep_id}/trials").json()["data"]):
                assert time.monotonic() < deadline, "no trial started"
                time.sleep(0.5)
            time.sleep(2)  # a few epochs in

            postgres.stop()
            down = time.monotonic()
            during = c.get(f"/sweeps/{sweep_id}")
            ready = httpx.get(f"{server.url}/readyz", timeout=30)
            time.sleep(max(0.0, 6 - (time.monotonic() - down)))  # down for ~6 s: longer than a lease renewal
            postgres.start()

            assert during.status_code == 503 and "Retry-After" in during.headers, during.text
            assert ready.status_code == 503 and "database" in ready.text and "127.0.0.1" not in ready.text
            deadline = time.monotonic() + 240
            while (status := c.get(f"/sweeps/{sweep_id}").json()["status"]) in ("pending", "running"):
                assert time.monotonic() < deadline, "the sweep did not finish after the outage"
                time.sleep(1)
            assert status == "completed"
    finally:
        stop_server(server)
    with SqlStorage(postgres.url, migrate=False) as store:
        trials = store.trials(sweep_id)[0]
        assert [t.status for t in trials] == ["completed"] * 4
        assert [t.attempts for t in trials] == [1] * 4, "the outage cost an attempt"
        for t in trials:
            assert [e.epoch for e in store.epochs(t.id)] == list(range(1, 13))
    log = (tmp_path / "wdgrid-logs" / f"sweep-{sweep_id}.log").read_text()
    assert "retry" in log  # the driver rode the outage out: it did not die and restart
