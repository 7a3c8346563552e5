"""API latency while a sweep trains: a real ``wdgrid serve`` (uvicorn, SQLite) trains a sweep on embedded Ray while
50 concurrent pollers (asyncio + httpx, each with its own connection) request ``GET /sweeps/{id}`` and
``GET /sweeps/{id}/grid.csv`` for ``--seconds``: first each once a second (what ``wdgrid status --watch`` does),
then back to back (the server's saturation); prints p50/p99/max latency of each and the requests served.

    .venv/bin/python bench/api.py                  # about 2 minutes on 2 CPU cores
    .venv/bin/python bench/api.py --pollers 50 --seconds 60
    .venv/bin/python bench/api.py --baseline b128ea7 --intervals 0 --seconds 30   # A/B against an older server

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
from typing import Any

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


HEADER = f"{'each poller':<16}{'route':<28}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"


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


def measure(
    command: list[str], cwd: str | None, pythonpath: str | None, pollers: int, seconds: float, intervals: list[float]
) -> tuple[dict[float, dict[str, list[float]]], dict[str, Any]]:
    """Start a server with ``command``, have it train SPEC, poll it at each interval; returns latencies and state."""
    with tempfile.TemporaryDirectory() as folder:
        port, token = free_port(), secrets.token_hex(16)
        env = {**os.environ, "WDGRID_DATABASE_URL": f"sqlite:///{folder}/wdgrid.db", "WDGRID_PORT": str(port)}
        env |= {"WDGRID_API_TOKEN": token}
        if pythonpath:  # the baseline's code, not the installed working tree's
            env["PYTHONPATH"] = pythonpath
        server = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=cwd or folder,
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
            runs = {i: asyncio.run(load(url, token, sweep["id"], pollers, seconds, i)) for i in intervals}
            state = httpx.get(f"{url}/sweeps/{sweep['id']}", headers=headers).json()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    return runs, state


def report(label: str, runs: dict[float, dict[str, list[float]]], seconds: float) -> None:
    for interval, latencies in runs.items():
        every = f"every {interval:g} s" if interval else "back to back"
        for route, values in latencies.items():
            values.sort()
            p50 = statistics.median(values) * 1000
            p99 = values[min(len(values) - 1, int(0.99 * len(values)))] * 1000
            rate = len(values) / seconds
            row = f"{len(values):>9}{rate:>8.0f}{p50:>9.1f}{p99:>9.1f}{values[-1] * 1000:>9.1f}"
            print(f"{label:<10}{every:<16}{route:<28}{row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[1.0, 0.0], help="seconds between one poller's requests (0: none)"
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also measure the server of GIT_REF (checked out in a temporary worktree, run by uvicorn on h11 and "
        "asyncio as before httptools/uvloop were dependencies), alternating with this tree's, --rounds times",
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    here = [sys.executable, "-m", "service.cli", "serve"]

    if args.baseline is None:
        runs, state = measure(here, None, None, args.pollers, args.seconds, args.intervals)
        print(f"{args.pollers} concurrent pollers for {args.seconds:.0f} s while a sweep trained on 2 Ray workers")
        print(f"(sweep then {state['status']}, {state['counts']['running']} cells running; {os.cpu_count()} CPU cores)")
        print(f"{'':<10}{HEADER}")
        report("", runs, args.seconds)
        return

    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(["git", "worktree", "add", "--detach", tree, args.baseline], cwd=root, check=True)
        try:
            old = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app"]
            old += ["--loop", "asyncio", "--http", "h11", "--log-level", "warning"]
            print(
                f"{args.pollers} pollers, {args.seconds:.0f} s each, while a sweep trains; {os.cpu_count()} CPU cores"
            )
            print(f"{'server':<10}{HEADER}")
            for _ in range(args.rounds):  # alternate, so that drift in the machine's load hits both alike
                runs, _ = measure(old, tree, tree, args.pollers, args.seconds, args.intervals)
                report(args.baseline[:10], runs, args.seconds)
                runs, _ = measure(here, None, None, args.pollers, args.seconds, args.intervals)
                report("this tree", runs, args.seconds)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=root, check=False)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
