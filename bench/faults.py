"""Faults and hostile requests against a running service, and what survived: one table.

A real ``wdgrid serve`` (token on) on a PostgreSQL server of the bench's own trains a cnn1d sweep on MNIST-1D while
the bench injects, one after another: the database stopped for ``--outage`` seconds and started again; a SIGKILL of
a Ray worker that trains cells; a SIGKILL of the sweep's driver process. All the while a sampler requests
``/healthz`` every 50 ms and an attacker sends hostile requests back to back (a body over the size limit, a large
body without the token, non-JSON numbers, a lone surrogate, a NUL, a 5000-element list, deep nesting, a seed no
column holds). At the end it checks the sweep: every cell completed exactly once with all its epochs (none lost,
none duplicated), and prints the faults injected and survived, requests sent and 5xx answers, the ``/healthz``
latency under attack (p50/p99/max) and the server's RSS at the start and the end.

    .venv/bin/python bench/faults.py                  # about 4 minutes on 2 CPU cores
    .venv/bin/python bench/faults.py --epochs 40 --outage 10
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import SqlStorage  # noqa: E402 - after the path: the bench runs from a checkout
from tests.processes import own_postgres, start_server, stop_server  # noqa: E402


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hostile(url: str, token: str, stop: threading.Event, codes: dict[str, list[int]]) -> None:
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    spec = {"preset": "smoke"}
    bodies: dict[str, tuple[dict[str, str], bytes]] = {
        "over the size limit": (auth, b'{"preset": "smoke", "description": "' + b"x" * 3_000_000 + b'"}'),
        "10 MB without the token": ({"Content-Type": "application/json"}, b"[" + b"0," * 5_000_000 + b"0]"),
        "NaN": (auth, b'{"preset": "smoke", "epochs": NaN}'),
        "1e309": (auth, b'{"preset": "smoke", "batch_size": 1e309}'),
        "lone surrogate": (auth, b'{"preset": "smoke", "name": "\\ud800"}'),
        "NUL": (auth, json.dumps(spec | {"name": "a\u0000b"}).encode()),
        "5000 seeds": (auth, json.dumps(spec | {"seeds": list(range(5000))}).encode()),
        "deep nesting": (auth, b'{"preset": "smoke", "model_args": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001),
        "seed 2^31": (auth, json.dumps(spec | {"seeds": [2**31]}).encode()),
    }
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            for name, (headers, body) in bodies.items():
                try:
                    codes.setdefault(name, []).append(c.post("/sweeps", content=body, headers=headers).status_code)
                except httpx.HTTPError:
                    codes.setdefault(name, []).append(0)  # the server closed the connection: counted, not a 5xx
                if stop.is_set():
                    return


def _sampler(url: str, stop: threading.Event, latencies: list[float], codes: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            started = time.perf_counter()
            codes.append(c.get("/healthz").status_code)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the database is down")
    args = parser.parse_args()
    spec = {
        "name": "faults bench",
        "dataset": "mnist1d",
        "model": "cnn1d",
        "epochs": args.epochs,
        "batch_size": 128,
        "schedule": {"name": "cosine"},
        "seeds": [0],
        "grids": [
            {"optimizer": "sgdw", "lr": [0.05, 0.1, 0.2, 0.4], "weight_decay": [1e-4, 1e-3]},
            {"optimizer": "adamw", "lr": [1e-3, 2e-3, 4e-3, 8e-3], "weight_decay": [1e-4, 1e-3]},
        ],
    }
    with own_postgres() as pg, tempfile.TemporaryDirectory(prefix="wdgrid-faults-") as folder:
        if pg is None:
            raise SystemExit("no PostgreSQL server binaries here: apt-get install postgresql")
        token = secrets.token_hex(16)
        server = start_server(Path(folder), pg.url, token, settings={"WDGRID_DB_RETRY_S": "60"})
        rss_start = _rss_mb(server.process.pid)
        stop = threading.Event()
        latencies: list[float] = []
        health_codes: list[int] = []
        hostile: dict[str, list[int]] = {}
        threads = [
            threading.Thread(target=_sampler, args=(server.url, stop, latencies, health_codes), daemon=True),
            threading.Thread(target=_hostile, args=(server.url, token, stop, hostile), daemon=True),
        ]
        faults: list[tuple[str, bool]] = []
        started = time.monotonic()
        try:
            with server.client() as c, SqlStorage(pg.url, migrate=False) as store:
                sweep_id = c.post("/sweeps", json=spec).json()["id"]
                for thread in threads:
                    thread.start()

                def epochs_so_far() -> int:
                    return len(store.sweep_epochs(sweep_id))

                def wait_for_epochs(more: int) -> None:
                    target, deadline = epochs_so_far() + more, time.monotonic() + 300
                    while epochs_so_far() < target:
                        assert time.monotonic() < deadline, "the sweep stopped making progress"
                        time.sleep(0.5)

                wait_for_epochs(8)
                pg.stop()
                time.sleep(args.outage)
                pg.start()
                wait_for_epochs(8)
                faults.append((f"database down {args.outage:g} s", True))

                running = store.trials(sweep_id, status="running")[0]
                pids = {a.pid for t in running for a in store.attempts(t.id) if a.status == "running" and a.pid}
                if pids:
                    os.kill(pids.pop(), signal.SIGKILL)
                    wait_for_epochs(8)
                    faults.append(("Ray worker SIGKILL", True))

                driver = subprocess.run(
                    ["pgrep", "-f", f"service.cli drive {sweep_id}"], capture_output=True, text=True
                ).stdout.split()
                if driver:
                    os.killpg(int(driver[0]), signal.SIGKILL)  # the driver and its embedded Ray
                    wait_for_epochs(8)
                    faults.append(("sweep driver SIGKILL", True))

                deadline = time.monotonic() + 900
                while (status := c.get(f"/sweeps/{sweep_id}").json()["status"]) in ("pending", "running"):
                    assert time.monotonic() < deadline, "the sweep did not finish"
                    time.sleep(1)
                trials = store.trials(sweep_id)[0]
                lost = sum(t.status != "completed" for t in trials)
                duplicated = 0
                for t in trials:
                    final = [e.epoch for e in store.epochs(t.id, attempt=t.attempts)]
                    duplicated += len(final) - len(set(final))
                    lost += final != list(range(1, args.epochs + 1))
                faults = [(name, ok and status == "completed" and lost == 0) for name, ok in faults]
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            rss_end = _rss_mb(server.process.pid)
            stop_server(server)

    wall = time.monotonic() - started
    sent = sum(len(v) for v in hostile.values()) + len(health_codes)
    errors = sum(code >= 500 for v in hostile.values() for code in v) + sum(code >= 500 for code in health_codes)
    quantile = statistics.quantiles(latencies, n=100)
    print(f"{len(trials)} cells × {args.epochs} epochs (cnn1d, MNIST-1D) on PostgreSQL, {wall:.0f} s, sweep {status}")
    print(f"{'fault':<28} survived")
    for name, ok in faults:
        print(f"{name:<28} {'yes' if ok else 'NO'}")
    print(f"cells lost {lost}, epochs duplicated {duplicated}")
    print(f"requests sent {sent} (hostile {sent - len(health_codes)}, /healthz {len(health_codes)}), 5xx {errors}")
    for name, codes in hostile.items():
        print(f"  {name:<26} {len(codes):>5} × {sorted(set(codes))}")
    print(
        f"/healthz under attack: p50 {statistics.median(latencies):.1f} ms, p99 {quantile[98]:.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )
    print(f"server RSS {rss_start:.0f} MB at the start, {rss_end:.0f} MB at the end")


if __name__ == "__main__":
    main()
