"""How soon does a sweep start training after ``POST /sweeps``? Issue 17, goal 1. Three modes: ``standby`` (the
default: the controller's own Ray, one head shared by every sweep, and a driver kept started ahead), ``shared``
(that Ray, every driver started when its sweep is: ``WDGRID_STANDBY_DRIVER=false``) and ``per-sweep`` (an embedded
Ray per sweep driver: ``WDGRID_LOCAL_RAY=false``).

Each round starts a controller (``wdgrid serve``, a fresh SQLite store) in one mode, waits until ``/readyz`` says
its Ray is up, then:

- *at ready*: one small sweep POSTed as soon as ``/readyz`` is ok (a standby driver may still be warming); then
  the controller idles for 15 s (its memory then, over what the machine used before it started);
- *first*, *second*: one small sweep (MNIST-1D, the MLP, 4 cells, 2 epochs) after another: seconds from the POST's
  answer to the first cell ``running`` (what the sweep's page shows), and to the sweep's end;
- *together*: two such sweeps (30 epochs each) POSTed back to back with two sweep slots: when the later one starts,
  when both are done, and whether both had cells running at the same moment (sharing the cores).

Rounds alternate the modes (A B C C B A ...); the table gives each figure's median over rounds, and the machine's
memory in use at the peak of *together* over what it was before the controller started.

    .venv/bin/python bench/sweep_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import Server, start_server, stop_server  # noqa: E402

SPEC: dict[str, Any] = {
    "dataset": "mnist1d",
    "model": "mlp",
    "epochs": 2,
    "batch_size": 128,
    "schedule": {"name": "cosine"},
    "weight_decay_units": "raw",
    "seeds": [0],
    "grids": [{"optimizer": "adamw", "lr": [0.001, 0.002], "weight_decay": [0.0, 0.002]}],
}
MODES = {  # the settings that make each mode
    "standby": {"WDGRID_LOCAL_RAY": "true", "WDGRID_STANDBY_DRIVER": "true"},
    "shared": {"WDGRID_LOCAL_RAY": "true", "WDGRID_STANDBY_DRIVER": "false"},
    "per-sweep": {"WDGRID_LOCAL_RAY": "false", "WDGRID_STANDBY_DRIVER": "false"},
}
IDLE_S = 15  # after /readyz, before the first POST: what an idle controller holds (the standby warms meanwhile)
TOGETHER_EPOCHS = 30  # long enough (~10 s of training) that the two sweeps' trials can overlap


def _wait_ready(server: Server, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        r = httpx.get(f"{server.url}/readyz", timeout=5)
        if r.status_code == 200 and r.json().get("ray") in ("ok", "local", "embedded"):
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"sweep_start: the controller was not ready in {timeout:.0f} s: {r.text}")


def _submit(client: httpx.Client, name: str, seed: int, epochs: int = 2) -> tuple[int, float]:
    # A seed of its own: a spec that ran before would be served from its finished cells, never training.
    r = client.post("/sweeps", json=SPEC | {"name": name, "seeds": [seed], "epochs": epochs})
    r.raise_for_status()
    return int(r.json()["id"]), time.monotonic()


def _follow(client: httpx.Client, posted: dict[int, float], timeout: float = 600) -> dict[int, dict[str, float]]:
    """Poll every 0.1 s until every sweep ends: per sweep, seconds to its first running cell and to its end, and
    whether (at some poll) every sweep had a cell running."""
    times: dict[int, dict[str, float]] = {sid: {} for sid in posted}
    overlap, peak = False, 0.0
    deadline = time.monotonic() + timeout
    while any("end" not in t for t in times.values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"sweep_start: sweeps {list(posted)} did not end in {timeout:.0f} s")
        running = 0
        for sid, t0 in posted.items():
            if "end" in times[sid]:
                continue
            s = client.get(f"/sweeps/{sid}").raise_for_status().json()
            now = time.monotonic() - t0
            if s["counts"]["running"] and "start" not in times[sid]:
                times[sid]["start"] = now
            running += bool(s["counts"]["running"])
            if s["status"] in ("completed", "failed", "cancelled"):
                if s["status"] != "completed":
                    raise SystemExit(f"sweep_start: sweep {sid} ended {s['status']}: {s.get('error')}")
                times[sid]["end"] = now
                times[sid].setdefault("start", now)
        overlap = overlap or running == len(posted) > 1
        peak = max(peak, _used_mib())
        time.sleep(0.1)
    for t in times.values():
        t["overlap"], t["peak"] = float(overlap), peak
    return times


def _used_mib() -> float:
    """Memory in use on this machine (MemTotal − MemAvailable), MiB: the bench runs alone, so its growth over the
    baseline is the controller's, its Ray's and its drivers'."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def one_round(mode: str, work: Path) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work))
    token = secrets.token_hex(16)
    settings = MODES[mode] | {"WDGRID_MAX_CONCURRENT_SWEEPS": "2", "WDGRID_POLL_S": "0.5"}
    baseline = _used_mib()
    t0 = time.monotonic()
    server = start_server(folder, f"sqlite:///{folder / 'wdgrid.db'}", token, settings=settings)
    out: dict[str, float] = {"serve→ready": time.monotonic() - t0 + _wait_ready(server)}
    try:
        with server.client() as client:
            sid, t = _submit(client, "at-ready", seed=len(out))  # POSTed the moment /readyz says ok
            out["at ready: POST→running"] = _follow(client, {sid: t})[sid]["start"]
            time.sleep(IDLE_S)
            out["idle memory over before, MiB"] = _used_mib() - baseline
            for label in ("first", "second"):
                sid, t = _submit(client, label, seed=len(out))
                times = _follow(client, {sid: t})[sid]
                out[f"{label}: POST→running"], out[f"{label}: POST→done"] = times["start"], times["end"]
            a, ta = _submit(client, "together-a", seed=100, epochs=TOGETHER_EPOCHS)
            b, tb = _submit(client, "together-b", seed=101, epochs=TOGETHER_EPOCHS)
            both = _follow(client, {a: ta, b: tb})
            out["together: POST→running (later)"] = max(both[a]["start"], both[b]["start"])
            out["together: POST→both done"] = max(both[a]["end"], both[b]["end"])
            out["together: both running at once"] = both[a]["overlap"]
            out["together: peak memory over idle, MiB"] = both[a]["peak"] - baseline
    finally:
        out["stop"] = stop_server(server)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per mode, alternating (default 3).")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="wdgrid-sweep-start-") as work:
        for i in range(args.rounds):
            for mode in MODES if i % 2 == 0 else reversed(MODES):
                results[mode].append(one_round(mode, Path(work)))
                print(f"round {i + 1} {mode}: " + ", ".join(f"{k} {v:.1f}" for k, v in results[mode][-1].items()))
    print(f"\nmedian over {args.rounds} rounds, seconds (both running at once: share of rounds)")
    print(f"{'':34} " + " ".join(f"{m:>10}" for m in MODES))
    for key in next(iter(results.values()))[0]:
        print(f"{key:34} " + " ".join(f"{statistics.median(r[key] for r in results[m]):10.2f}" for m in MODES))


if __name__ == "__main__":
    main()
