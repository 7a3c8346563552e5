"""Orchestration overhead: a 64-cell, 20-epoch cnn1d sweep on MNIST-1D (4 optimizers × 4 α × 4 λ, one seed)
through four ways of running it, each in a fresh process:

- ``floor``   — the 64 cells trained back to back with ``train()`` in one process on one core (no Ray at all);
- ``runner``  — ``service.fanout.run_sweep`` into a fresh SQLite store: embedded Ray, chunks of a bundle as one
                batched model per trial, reused actors, every epoch written to the store;
- ``default`` — a plain Ray Tune grid, one trial per cell calling ``train()`` and reporting each epoch, Ray's
                defaults (what a newcomer writes);
- ``expert``  — the same grid with ``reuse_actors=True`` (what an expert writes);
- ``bundles`` (on request) — the runner's chunks trained back to back with ``train_bundle`` in one process on one
                core: the runner's work without Ray, so ``runner`` against ``bundles / cores`` is Ray's own cost.

``--fig2-rest`` (issue 17, goal 2) instead runs the 392-cell cpu-fig2 preset through a real ``wdgrid serve`` (POST
to completed) and the same chunks its driver plans, back to back in one process on one core, with one cell's time
alone as the machine's speed that day; then where the REST run's CPU time went (trials, driver, controller, Ray,
idle), and the chunks split over two processes at once without Ray (on 2 cores).

Every Ray mode starts its own embedded Ray with this machine's CPUs and 1 CPU per trial; ``end to end`` counts from
before ``ray.init`` to the end, ``fit`` only the fitting. Goals (issue 6): the runner within 1.15 × floor / cores
and faster end to end than the expert grid. ``--rounds N`` repeats the four modes N times in alternating order.

    .venv/bin/python bench/orchestration.py                 # about 8 minutes on 2 CPU cores
    .venv/bin/python bench/orchestration.py --cpu-fig2      # then the cpu-fig2 preset through the runner
    .venv/bin/python bench/orchestration.py --fig2-rest     # only cpu-fig2 through REST vs its chunks (~12 min)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps import expand

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("floor", "runner", "default", "expert")
EXTRA = ("bundles",)  # not run by default: --modes floor bundles runner


def bench_spec() -> Any:
    from sweeps import SweepSpec

    axis = {"base": 2, "start": -8, "stop": -2, "step": 2}
    return SweepSpec.model_validate(
        {
            "name": "orchestration bench",
            "dataset": "mnist1d",
            "model": "cnn1d",
            "epochs": 20,
            "batch_size": 128,
            "schedule": {"name": "cosine"},
            "seeds": [0],
            "grids": [{"optimizer": o, "lr": axis, "weight_decay": axis} for o in ("sgd", "sgdw", "adam", "adamw")],
        }
    )


def configs() -> list[dict[str, Any]]:
    from sweeps import cells

    spec = bench_spec()
    return [c.config.as_dict() for c in cells(spec)]


def run_floor() -> dict[str, float]:
    import torch

    from sweeps import TrainingConfig
    from workers.train import load_data, resolve_device, train

    torch.set_num_threads(1)
    cfgs = configs()
    start = time.perf_counter()
    data = load_data(TrainingConfig.from_dict(cfgs[0]), resolve_device("cpu"))
    for c in cfgs:
        train(c, device="cpu", data=data)
    wall = time.perf_counter() - start
    return {"end_to_end": wall, "fit": wall}


def run_bundles() -> dict[str, float]:
    import torch

    from service.fanout import CPU_CELLS_PER_TRIAL
    from sweeps import TrainingConfig, bundles
    from workers.bundle import train_bundle
    from workers.train import load_data, resolve_device

    torch.set_num_threads(1)
    spec = bench_spec()
    start = time.perf_counter()
    data = load_data(TrainingConfig.from_dict(configs()[0]), resolve_device("cpu"))
    for bundle in bundles(spec, max_size=CPU_CELLS_PER_TRIAL):
        train_bundle([c.config for c in bundle.cells], device="cpu", data=data)
    wall = time.perf_counter() - start
    return {"end_to_end": wall, "fit": wall}


def run_runner(store_dir: str) -> dict[str, float]:
    from results import SqlStorage
    from service.fanout import RunOptions, init_ray, run_sweep

    store = SqlStorage(f"sqlite:///{store_dir}/bench.db")
    sweep = store.create_sweep(expand(bench_spec()))
    start = time.perf_counter()
    init_ray()
    fit_start = time.perf_counter()
    summary = run_sweep(store, sweep.id, RunOptions())
    end = time.perf_counter()
    assert summary.status == "completed", summary
    return {"end_to_end": end - start, "fit": end - fit_start}


def run_grid(reuse: bool) -> dict[str, float]:
    import ray
    from ray import tune

    from service.fanout import _tune_environment

    def trainable(config: dict[str, Any]) -> None:
        import torch

        from workers.train import train

        torch.set_num_threads(1)
        train(config["cell"], on_epoch=lambda m: tune.report({"test_error": m.test_error, "epoch": m.epoch}))

    _tune_environment()  # the same quiet console and no file loggers as the runner: only orchestration differs
    start = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    fit_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"cell": tune.grid_search(configs())},
            tune_config=tune.TuneConfig(reuse_actors=reuse),
            run_config=tune.RunConfig(storage_path=folder, verbose=0),
        )
        results = tuner.fit()
    end = time.perf_counter()
    assert not results.errors, results.errors
    return {"end_to_end": end - start, "fit": end - fit_start}


def run_cpu_fig2(store_dir: str) -> dict[str, Any]:
    from results import SqlStorage, report, seed_grids
    from service.fanout import RunOptions, init_ray, run_sweep
    from sweeps import load_preset

    store = SqlStorage(f"sqlite:///{store_dir}/cpu-fig2.db")
    spec = load_preset("cpu-fig2")
    sweep = store.create_sweep(expand(spec))
    start = time.perf_counter()
    init_ray()
    summary = run_sweep(store, sweep.id, RunOptions())
    wall = time.perf_counter() - start
    grids: dict[str, Any] = {g.optimizer: seed_grids(store, sweep.id, g.optimizer) for g in spec.grids}
    return {
        "end_to_end": wall,
        "status": summary.status,
        "counts": summary.counts,
        "trials": summary.trials,
        "verdicts": [c.verdict.splitlines()[0] for c in report(grids)],
    }


def run_fig2_chunks(part: int | None = None) -> dict[str, Any]:
    """cpu-fig2's cells in the chunks the service's driver plans for them on this machine (``plan_chunks`` with a
    slot per core), trained back to back with ``train_bundle`` in one process on one core: the work without Ray.
    ``part`` (0 or 1): only every other chunk from that one on, without the one-cell baseline (two such processes at
    once: the work on two cores, still without Ray)."""
    import torch

    from results import SqlStorage
    from service.fanout import CPU_CELLS_PER_TRIAL, plan_chunks
    from sweeps import TrainingConfig, load_preset
    from workers.bundle import train_bundle
    from workers.train import load_data, resolve_device, train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder, SqlStorage(f"sqlite:///{folder}/plan.db") as store:
        sweep = store.create_sweep(expand(load_preset("cpu-fig2")))
        pending = store.trials(sweep.id, limit=1000)[0]
        chunks = plan_chunks(pending, slots=os.cpu_count() or 1, max_cells=CPU_CELLS_PER_TRIAL)
    configs = [[TrainingConfig.from_dict(t.config) for t in chunk] for chunk in chunks]
    data = load_data(configs[0][0], resolve_device("cpu"))
    if part is not None:
        start = time.perf_counter()
        for chunk in configs[part::2]:
            train_bundle(chunk, device="cpu", data=data)
        return {"half_s": time.perf_counter() - start}
    one = [train(configs[0][0], device="cpu", data=data).wall_time_s for _ in range(2)]  # the machine's speed today
    start = time.perf_counter()
    for chunk in configs:
        train_bundle(chunk, device="cpu", data=data)
    return {"chunks_s": time.perf_counter() - start, "chunks": len(chunks), "one_cell_s": statistics.median(one)}


# Where the CPU time of a run through REST goes: each process of the machine in one of these, by its command line
# (first match); Ray names a trial's actor process "ray::ImplicitFunc..." once it runs one.
CPU_CLASSES = (
    ("trials (Ray workers)", ("ray::",)),
    ("sweep driver", ("service.cli standby", "service.cli drive")),
    ("controller (API, scheduler)", ("service.cli serve",)),
    ("Ray's GCS and raylet", ("gcs_server", "raylet")),
    ("Ray's other processes", ("ray/", "ray start", "default_worker.py")),
)


def _cpu_by_class() -> dict[int, tuple[str, float]]:
    """pid -> (class, CPU seconds so far) for every process of a class in ``CPU_CLASSES``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        for name, marks in CPU_CLASSES:
            if any(mark in command for mark in marks):
                out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)  # utime + stime
                break
    return out


def run_fig2_rest() -> dict[str, Any]:
    """cpu-fig2 POSTed to a real ``wdgrid serve`` (fresh SQLite store, default settings): seconds from the POST's
    answer to the sweep's ``completed``, and the CPU seconds each class of process used meanwhile (sampled every
    second, so a process that exits loses at most its last second)."""
    import secrets

    from tests.processes import start_server, stop_server

    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder), f"sqlite:///{folder}/wdgrid.db", secrets.token_hex(16))
        try:
            standby = Path(folder) / "wdgrid-logs" / "standby.log"
            deadline = time.monotonic() + 120
            while not (standby.exists() and "ready after" in standby.read_text()):  # a controller at rest
                assert time.monotonic() < deadline, "the controller's standby driver was not ready in 120 s"
                time.sleep(0.2)
            with server.client() as client:
                r = client.post("/sweeps", json={"preset": "cpu-fig2"})
                r.raise_for_status()
                posted, sweep_id = time.monotonic(), r.json()["id"]
                before, last = _cpu_by_class(), dict[int, tuple[str, float]]()
                while (s := client.get(f"/sweeps/{sweep_id}").json())["status"] in ("pending", "running"):
                    last |= _cpu_by_class()
                    time.sleep(1.0)
                wall = time.monotonic() - posted
                last |= _cpu_by_class()
        finally:
            stop_server(server)
    cpu: dict[str, float] = {name: 0.0 for name, _ in CPU_CLASSES}
    for pid, (name, seconds) in last.items():
        cpu[name] += seconds - before.get(pid, (name, 0.0))[1]
    return {"rest_s": wall, "status": s["status"], "counts": s["counts"], "cpu_s": cpu}


def child(mode: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        if mode == "floor":
            out: dict[str, Any] = run_floor()
        elif mode == "bundles":
            out = run_bundles()
        elif mode == "runner":
            out = run_runner(folder)
        elif mode in ("default", "expert"):
            out = run_grid(reuse=mode == "expert")
        elif mode == "fig2-chunks":
            out = run_fig2_chunks()
        elif mode.startswith("fig2-half-"):
            out = run_fig2_chunks(int(mode.removeprefix("fig2-half-")))
        elif mode == "fig2-rest":
            out = run_fig2_rest()
        else:
            out = run_cpu_fig2(folder)
    print("RESULT " + json.dumps(out), flush=True)


def spawn_together(modes: list[str]) -> list[dict[str, Any]]:
    """Children started at once; their results once all have exited."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", m],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for m in modes
    ]
    out = []
    for mode, proc in zip(modes, procs, strict=True):
        stdout, stderr = proc.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{mode} failed:\n{stderr[-3000:]}")
        out.append(json.loads(lines[-1][len("RESULT ") :]))
    return out


def spawn(mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode], capture_output=True, text=True, cwd=ROOT, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--child",
        choices=[*MODES, *EXTRA, "cpu-fig2", "fig2-chunks", "fig2-half-0", "fig2-half-1", "fig2-rest"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the four modes, alternating their order")
    parser.add_argument("--modes", nargs="+", choices=[*MODES, *EXTRA], default=list(MODES))
    parser.add_argument("--cpu-fig2", action="store_true", help="then run the cpu-fig2 preset through the runner")
    parser.add_argument(
        "--fig2-rest",
        action="store_true",
        help="only: cpu-fig2 through a real controller (POST to completed) against its chunks back to back ÷ cores",
    )
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    cores = os.cpu_count() or 1
    # Generate MNIST-1D once, outside every timing.
    from workers.data import load_dataset

    load_dataset("mnist1d")
    if args.fig2_rest:
        fig2_rest(cores)
        return
    times: dict[str, list[dict[str, float]]] = {m: [] for m in args.modes}
    for r in range(args.rounds):
        order = args.modes if r % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            times[mode].append(spawn(mode))
            print(f"round {r + 1} {mode:8s} {times[mode][-1]['end_to_end']:7.1f} s", file=sys.stderr, flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(t[key] for t in times[mode])

    print(f"64 cells × 20 epochs, cnn1d on MNIST-1D, {cores} CPU cores, {args.rounds} round(s), medians")
    print(f"{'mode':<10}{'end to end s':>14}{'fit s':>9}{'× floor/cores' if 'floor' in times else '':>15}")
    for mode in args.modes:
        e2e, fit = med(mode, "end_to_end"), med(mode, "fit")
        ratio = f"{e2e / (med('floor', 'end_to_end') / cores):>15.2f}" if "floor" in times else ""
        print(f"{mode:<10}{e2e:>14.1f}{fit:>9.1f}{ratio}")
    if {"runner", "bundles"} <= set(times):
        ray_cost = med("runner", "end_to_end") / (med("bundles", "end_to_end") / cores)
        print(f"runner / (bundles / cores) = {ray_cost:.2f}: Ray's start-up, scheduling and the store's writes")
    if {"runner", "expert", "floor"} <= set(times):
        runner, expert, floor = med("runner", "end_to_end"), med("expert", "end_to_end"), med("floor", "end_to_end")
        goal = 1.15 * floor / cores
        verdict = "met" if runner <= goal else "NOT met"
        print(f"goal 1: runner {runner:.1f} s <= 1.15 × floor / cores = {goal:.1f} s: {verdict}")
        print(f"goal 2: runner {runner:.1f} s < expert grid {expert:.1f} s: {'met' if runner < expert else 'NOT met'}")
    if args.cpu_fig2:
        fig2 = spawn("cpu-fig2")
        print(f"cpu-fig2 (392 cells) through the runner: {fig2['end_to_end']:.0f} s end to end, {fig2['status']}, "
              f"{fig2['trials']} trials, {fig2['counts']}")  # fmt: skip
        for verdict in fig2["verdicts"]:
            print(f"  {verdict}")


def fig2_rest(cores: int) -> None:
    """Issue 17, goal 2: cpu-fig2 end to end through REST within 1.10× of its chunks back to back ÷ cores, and under
    5 minutes on 2 cores."""
    chunks, rest = spawn("fig2-chunks"), spawn("fig2-rest")
    halves = spawn_together(["fig2-half-0", "fig2-half-1"]) if cores == 2 else []
    floor = chunks["one_cell_s"] * 392 / cores
    per_core = chunks["chunks_s"] / cores
    ratio = rest["rest_s"] / per_core
    print(f"cpu-fig2, 392 cells × 20 epochs (cnn1d, MNIST-1D), {cores} CPU cores")
    one = chunks["one_cell_s"]
    print(f"  one cell alone (train(), 1 thread): {one:7.2f} s   392 of them ÷ cores: {floor:.0f} s")
    print(f"  {chunks['chunks']} chunks back to back (1 core): {chunks['chunks_s']:7.1f} s   ÷ cores: {per_core:.0f} s")
    print(f"  through REST, POST to completed: {rest['rest_s']:7.1f} s   {rest['status']}, {rest['counts']}")
    print(f"  REST / (chunks / cores) = {ratio:.2f}: goal ≤ 1.10 {'met' if ratio <= 1.10 else 'NOT met'}; "
          f"under 5 minutes: {'yes' if rest['rest_s'] < 300 else 'no'}")  # fmt: skip
    budget = rest["rest_s"] * cores
    print(f"  where the {budget:.0f} CPU-seconds of the REST run went ({cores} cores × {rest['rest_s']:.0f} s):")
    for name, seconds in rest["cpu_s"].items():
        print(f"    {name:<30} {seconds:7.1f} s  {seconds / budget:6.1%}")
    idle = budget - sum(rest["cpu_s"].values())
    print(f"    {'idle or other processes':<30} {idle:7.1f} s  {idle / budget:6.1%}")
    print(f"    (the chunks alone, back to back: {chunks['chunks_s']:.1f} s)")
    if halves:
        # Every other chunk in each process: a static split, so the later of the two also waits on the imbalance
        # that Tune's dynamic assignment avoids; their sum against the chunks back to back is the cores' contention.
        walls = [h["half_s"] for h in halves]
        both, work = max(walls), sum(walls)
        print(
            f"  the chunks in two processes at once, one per core, no Ray: {walls[0]:.1f} s and {walls[1]:.1f} s, "
            f"{work / chunks['chunks_s']:.2f}x the CPU time back to back (two trainings at once slow each other); "
            f"REST / the later = {rest['rest_s'] / both:.2f}"
        )


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
