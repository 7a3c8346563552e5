"""API latency while a sweep trains: a real ``wdgrid serve`` (uvicorn, SQLite) trains a sweep on embedded Ray while
50 concurrent pollers (asyncio + httpx, each with its own connection) request ``GET /sweeps/{id}`` and
``GET /sweeps/{id}/grid.csv`` for ``--seconds``: first each once a second (what ``wdgrid status --watch`` does),
then back to back (the server's saturation); prints p50/p99/max latency of each and the requests served.

    .venv/bin/python bench/api.py                  # about 2 minutes on 2 CPU cores
    .venv/bin/python bench/api.py --pollers 50 --seconds 60

Goal (issue 8): p99 under 100 ms for both while the sweep trains.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SPEC = {
    "name": "api bench",
    "dataset": "mnist1d",
    "model": "cnn1d",
    "epochs": 200,
    "batch_size": 128,
    "schedule": {"name": "cosine"},
    "seeds": [0],
    "grids": [
        {"optimizer": "sgd", "lr": [0.01, 0.03, 0.1, 0.3], "weight_decay": [1e-4, 1e-3, 1e-2]},
        {"optimizer": "sgdw", "lr": [0.01, 0.03, 0.1, 0.3], "weight_decay": [1e-4, 1e-3, 1e-2]},
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll(
    client: httpx.AsyncClient, path: str, params: dict[str, str], until: float, interval: float, out: list[float]
) -> None:
    """Request ``path`` every ``interval`` seconds (0: back to back) until ``until``; record each latency."""
    await asyncio.sleep(interval * random.random())  # pollers do not start in lockstep
    while time.monotonic() < until:
        start = time.perf_counter()
        response = await client.get(path, params=params)
        elapsed = time.perf_counter() - start
        out.append(elapsed)
        response.raise_for_status()
        await asyncio.sleep(max(0.0, interval - elapsed))


async def load(
    url: str, token: str, sweep_id: int, pollers: int, seconds: float, interval: float
) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {"GET /sweeps/{id}": [], "GET /sweeps/{id}/grid.csv": []}
    headers = {"Authorization": f"Bearer {token}"}
    until = time.monotonic() + seconds
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30) for _ in range(pollers)]
    try:
        tasks = []
        for i, client in enumerate(clients):  # half poll the status, half the grid
            params: dict[str, str] = {}
            if i % 2 == 0:
                path, key = f"/sweeps/{sweep_id}", "GET /sweeps/{id}"
            else:
                path, params, key = f"/sweeps/{sweep_id}/grid.csv", {"optimizer": "sgd"}, "GET /sweeps/{id}/grid.csv"
            tasks.append(poll(client, path, params, until, interval, latencies[key]))
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[1.0, 0.0], help="seconds between one poller's requests (0: none)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        port, token = free_port(), secrets.token_hex(16)
        env = {**os.environ, "WDGRID_DATABASE_URL": f"sqlite:///{folder}/wdgrid.db", "WDGRID_PORT": str(port)}
        env |= {"WDGRID_API_TOKEN": token}
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{url}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            headers = {"Authorization": f"Bearer {token}"}
            sweep = httpx.post(f"{url}/sweeps", json=SPEC, headers=headers, timeout=30).json()
            # Measure while cells train, not while the driver starts.
            while httpx.get(f"{url}/sweeps/{sweep['id']}", headers=headers).json()["counts"]["running"] == 0:
                time.sleep(0.5)
            runs = {
                i: asyncio.run(load(url, token, sweep["id"], args.pollers, args.seconds, i)) for i in args.intervals
            }
            state = httpx.get(f"{url}/sweeps/{sweep['id']}", headers=headers).json()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    print(f"{args.pollers} concurrent pollers for {args.seconds:.0f} s while a sweep trained on 2 Ray workers")
    print(f"(sweep then {state['status']}, {state['counts']['running']} cells running; {os.cpu_count()} CPU cores)")
    print(f"{'each poller':<16}{'route':<28}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for interval, latencies in runs.items():
        every = f"every {interval:g} s" if interval else "back to back"
        for route, values in latencies.items():
            values.sort()
            p50 = statistics.median(values) * 1000
            p99 = values[min(len(values) - 1, int(0.99 * len(values)))] * 1000
            rate = len(values) / args.seconds
            row = f"{len(values):>9}{rate:>8.0f}{p50:>9.1f}{p99:>9.1f}{values[-1] * 1000:>9.1f}"
            print(f"{every:<16}{route:<28}{row}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
