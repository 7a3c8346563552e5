"""The Ray Tune trainable: one Tune trial trains a *chunk* — cells of one bundle — with ``train_bundle`` and streams
every epoch's metrics back to the driver through ``tune.report``.

This module runs in Ray worker processes. It imports torch (when it trains), Ray Tune, ``sweeps`` and ``workers``
only: no database, no ``results``, no ``service``. The driver (``service.fanout``) is the only writer of the
store; what it needs comes in the reports:

``{"epochs": [[cell index, EpochMetrics as a dict], ...],``
`` "finished": [[cell index, {"status", "epochs_done", "last" (epoch dict), "wall_time_s", "device",``
`` "diverged_at_epoch", "error"}], ...],``
`` "where": {"host", "node", "pid"}, "provenance": {"git_sha", "package_versions"}}``

Reports: a chunk's epochs go to the driver in one report at most every ``REPORT_EVERY_S`` seconds, and at once
whenever a cell finishes or a checkpoint is written. One report per epoch boundary made fast epochs cost the driver
more than the training they reported (cpu-fig2: 640 reports, each a Tune result and a store transaction).

Checkpoints: the bundle's state goes into a ``tune.Checkpoint`` at most every ``checkpoint_interval_s`` seconds
(0: every epoch). When Tune restarts a crashed trial, ``tune.get_checkpoint()`` hands that state back, the chunk
continues from it, and the first report repeats the running cells' history up to the checkpoint, so the new attempt's
epochs in the store are complete (identical values: training is deterministic on the CPU).

A step that never returns (stuck in native code, or simply far longer than the cell's time limit) cannot be ended by
the loops' check between steps. While a chunk trains with a time limit, a watchdog thread watches the running
training's deadline (``workers.run.TrainingDeadline``): ``hang_grace_s`` seconds past it (default 60) it reports every
cell of the chunk not yet finished as ``timed_out`` with :func:`hang_error`, with a checkpoint that holds only
``hung.json``, and once the report has left it ends this worker process: nothing else stops the step. Tune restarts
the trial from that checkpoint in a fresh process, where the chunk sees the mark and returns at once (a step that hung
once would hang again); the driver, which has every cell's result, counts no retry.

Each checkpoint also holds ``cells.json``: the chunk's store trial ids in cell order and the indices of the cells it
holds as done. A driver that was killed leaves its checkpoints behind; the next driver of the sweep finds them
(``service.fanout``), and a chunk whose ``resume_from`` names one starts from it when Tune has no checkpoint of its
own, exactly as after a crash. A checkpoint that cannot be read is ignored: the chunk trains from the start.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ray import tune

from sweeps import HANG_GRACE_S, PluginKind, installed

if TYPE_CHECKING:
    from workers.bundle import BundleState
    from workers.train import EpochMetrics

REPORT_EVERY_S: Final = 2.0  # seconds between a running chunk's reports of finished epochs, at most

# torch (and workers.bundle, which imports it) is imported inside the functions that run on a worker: the driver
# imports this module only to hand train_chunk to Tune, and importing torch there would delay every sweep's start by
# 2-3 s (bench/sweep_start.py).

__all__ = ["CELLS_FILE", "CHECKPOINT_FILE", "hang_error", "provenance", "train_chunk"]

CHECKPOINT_FILE: Final = "bundle.pt"
CELLS_FILE: Final = "cells.json"
HUNG_FILE: Final = "hung.json"
_REPORT_WAIT_S: Final = 60.0  # the most a hung chunk's worker waits for its report to be taken before it exits

log = logging.getLogger(__name__)
_PACKAGES: Final = ("wdgrid", "torch", "numpy", "ray")


@functools.cache
def provenance() -> dict[str, Any]:
    """The worker's code and libraries: git SHA of the source tree (``$WDGRID_GIT_SHA`` in images without ``.git``)
    and the versions of wdgrid, torch, numpy and Ray. Computed once per process."""
    sha = os.environ.get("WDGRID_GIT_SHA")
    if not sha:
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = None
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return {"git_sha": sha or None, "package_versions": versions}


def plugin_packages(config: Mapping[str, Any]) -> dict[str, str]:
    """The packages (name → version) that installed the cell's model, data set and trainer plugins on this
    worker."""
    out = {}
    kinds: tuple[PluginKind, ...] = ("model", "dataset", "trainer")
    for kind in kinds:
        info = installed(kind).get(str(config.get(kind)))
        if info is not None:
            out[info.package] = info.version
    return out


def _where() -> dict[str, Any]:
    import ray  # the runtime context exists only inside a Ray worker

    return {"host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def _load(folder: str | Path) -> BundleState:
    import torch

    state: BundleState = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    return state


def _running_history(state: BundleState) -> list[list[Any]]:
    """The epochs a checkpoint holds for the cells of its running unit, as (cell index, metrics dict) pairs."""
    inner = state["inner"]
    if inner is None:
        return []
    start = int(state["start"])
    return [[start + j, m] for j, history in enumerate(inner["histories"]) for m in history]


def hang_error(limit_s: float, grace_s: float) -> str:
    """What the cells of a chunk whose step did not return say: one line."""
    return (
        f"a training step did not return {grace_s:g} s after the cell's time limit of {limit_s:g} s (the spec's "
        "cell_time_limit_s): its worker process was ended; the chunk's unfinished cells end with it (resuming the "
        "sweep trains them again)"
    )


def _watch(grace_s: float, done: threading.Event, hung: Callable[[], dict[str, Any]]) -> None:
    """Until ``done``: once the running training is ``grace_s`` past its deadline, report ``hung()`` and end the
    process (see the module docstring)."""

    from workers.run import TrainingDeadline  # imports torch: here, on a worker, not where the driver imports us

    def watch() -> None:
        while time.perf_counter() <= TrainingDeadline.at + grace_s:
            if done.wait(min(1.0, grace_s / 4)):
                return
        log.error("a training step did not return %.0f s after its time limit: ending this worker", grace_s)
        message = hung()
        with tempfile.TemporaryDirectory(prefix="wdgrid-hung-") as folder:
            (Path(folder) / HUNG_FILE).write_text(json.dumps({"hung_after_s": grace_s}))
            # tune.report returns once Tune asks the trial to go on (it took the report); if it never does (the
            # sweep is stopping), exit all the same.
            reporter = threading.Thread(
                target=tune.report, args=(message,), kwargs={"checkpoint": tune.Checkpoint.from_directory(folder)}
            )
            reporter.start()
            reporter.join(_REPORT_WAIT_S)
        os._exit(70)  # EX_SOFTWARE: nothing else stops a step that does not return

    threading.Thread(target=watch, name="wdgrid-step-watchdog", daemon=True).start()


def train_chunk(config: dict[str, Any]) -> None:
    """Ray Tune function trainable. ``config["chunk"]``: ``cells`` (a list of ``{"trial_id", "config"}``, the
    config being the store's resolved training config), ``batched`` (None: ``train_bundle``'s default), ``threads``
    (torch's intra-op threads: the trial's CPUs), ``data_dir`` (None: the worker's default), ``time_limit_s``
    (seconds each cell, or batched chunk of cells, may train; None: no limit), ``hang_grace_s`` (see the module
    docstring; None: ``HANG_GRACE_S``), ``checkpoint_interval_s`` and ``resume_from`` (None, or the folder of a
    checkpoint an earlier driver left for exactly these cells)."""
    import torch

    from workers.bundle import ResumeMismatchError, train_bundle

    chunk = config["chunk"]
    torch.set_num_threads(max(1, int(chunk["threads"])))
    configs = [cell["config"] for cell in chunk["cells"]]
    trial_ids = [int(cell["trial_id"]) for cell in chunk["cells"]]
    interval = float(chunk["checkpoint_interval_s"])
    data_dir = chunk.get("data_dir")

    epochs: list[list[Any]] = []
    reported: set[int] = set()
    where = _where()
    resume: BundleState | None = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            if (Path(folder) / HUNG_FILE).exists():
                return  # this chunk's step hung; its cells were reported (see the module docstring)
            resume = _load(folder)
    elif chunk.get("resume_from"):  # left by a driver that was killed: see the module docstring
        try:
            resume = _load(chunk["resume_from"])
        except Exception as exc:  # truncated by the kill, or gone: start over rather than fail the cells
            log.warning("not resuming from %s: %s", chunk["resume_from"], exc)
    last: dict[int, dict[str, Any]] = {}  # each cell's latest epoch, for a hung report
    if resume is not None:
        epochs += _running_history(resume)
        last |= {int(i): m for i, m in epochs}
        reported |= {int(i) for i in resume["done"]}  # reported by the attempt that wrote the checkpoint
    last_saved = last_sent = time.monotonic()

    def on_epoch(i: int, m: EpochMetrics) -> None:
        epochs.append([i, asdict(m)])
        last[i] = epochs[-1][1]

    def payload(state: BundleState) -> dict[str, Any]:
        finished = []
        for i, r in sorted(state["done"].items(), key=lambda kv: int(kv[0])):
            if int(i) not in reported:
                reported.add(int(i))
                history = r["history"]
                result = {k: r.get(k) for k in ("status", "wall_time_s", "device", "diverged_at_epoch", "error")}
                finished.append(
                    [int(i), result | {"epochs_done": len(history), "last": history[-1] if history else None}]
                )
        out = {"epochs": list(epochs), "finished": finished, "where": where}
        if finished:
            base = provenance()
            versions = base["package_versions"] | plugin_packages(configs[0])
            out["provenance"] = base | {"package_versions": versions}
        epochs.clear()
        return out

    def on_checkpoint(state: BundleState) -> None:
        nonlocal last_saved, last_sent
        now = time.monotonic()
        finishing = any(int(i) not in reported for i in state["done"])
        if not finishing and now - last_saved < interval and now - last_sent < REPORT_EVERY_S:
            return  # the epochs wait in `epochs` for the next report
        last_sent = now
        message = payload(state)
        if state["inner"] is None and len(reported) == len(configs):
            tune.report(message)  # the whole chunk is done: nothing left to resume
            return
        if time.monotonic() - last_saved < interval:
            tune.report(message)
            return
        with tempfile.TemporaryDirectory(prefix="wdgrid-ckpt-") as folder:
            torch.save(state, Path(folder) / CHECKPOINT_FILE)
            cells = {"trial_ids": trial_ids, "done": sorted(int(i) for i in state["done"])}
            (Path(folder) / CELLS_FILE).write_text(json.dumps(cells))
            tune.report(message, checkpoint=tune.Checkpoint.from_directory(folder))
        last_saved = time.monotonic()

    def hung() -> dict[str, Any]:
        limit, grace = float(chunk["time_limit_s"]), float(chunk.get("hang_grace_s") or HANG_GRACE_S)
        finished = []
        for i in range(len(configs)):
            if i not in reported:
                m = last.get(i)
                result = {"status": "timed_out", "wall_time_s": m and m["wall_time_s"], "device": None}
                result |= {"diverged_at_epoch": None, "error": hang_error(limit, grace)}
                finished.append([i, result | {"epochs_done": m["epoch"] if m else 0, "last": m}])
        return {"epochs": list(epochs), "finished": finished, "where": where}

    def run(resume: BundleState | None) -> None:
        train_bundle(
            configs,
            on_epoch,
            data_dir=data_dir,
            batched=chunk["batched"],
            on_checkpoint=on_checkpoint,
            resume=resume,
            time_limit_s=chunk.get("time_limit_s"),
        )

    done = threading.Event()
    if chunk.get("time_limit_s") is not None:
        _watch(float(chunk.get("hang_grace_s") or HANG_GRACE_S), done, hung)
    try:
        run(resume)
    except ResumeMismatchError as exc:
        if checkpoint is not None:
            raise  # Tune's own checkpoint of this very trial: a bug, not a choice
        log.warning("not resuming from %s: %s", chunk["resume_from"], exc)  # an earlier driver's other options
        epochs.clear()
        reported.clear()
        last.clear()
        run(None)
    finally:
        done.set()  # this actor may train the next chunk: its watchdog is that chunk's
