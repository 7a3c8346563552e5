"""The fan-out: run a stored sweep on Ray Tune. The process that calls :func:`run_sweep` is the sweep's *driver*.

``run_sweep(store, sweep_id)`` takes the sweep's pending cells (finished ones are never trained again), cuts each
bundle into *chunks* of at most ``cells_per_trial`` cells and runs every chunk as one Ray Tune trial
(``workers.trainable.train_chunk``: one batched model per chunk where the model allows it). Actors are reused, so a
worker process pays for Python, torch and the data set once, not once per cell.

The driver is the only writer of the sweep's trials and epochs; workers only report. Its Tune callback
(``service._result_writer.ResultWriter``) claims a chunk's cells when the chunk starts (one attempt each), writes
every report's epochs as they arrive (one transaction per report), finishes cells as ``completed`` or ``diverged``
(a result: never retried), and every ``heartbeat_s`` renews its lease on the sweep and checks for cancellation.

Failures: a chunk whose worker crashes (an exception, a killed process, a lost node) is restarted by Tune up to
``max_retries`` times from its last checkpoint; each restart ends the cells' attempt as ``failed`` (with the error)
and starts the next one, whose epochs begin with the history the checkpoint holds. After the last retry the cells
become ``failed``; ``Storage.resume_sweep`` re-queues them.

Resume: a driver that dies (SIGKILL) leaves its lease to expire; running the sweep again takes it over at once when
the old driver was a process on this host that no longer exists, re-queues the cells that were running and trains
only what is not finished. The cells that were running continue from the last checkpoint the dead driver's trials
left in the Tune folder (``storage_path``; on a cluster a shared path), when one is there and still matches the
store: its done cells finished, its other cells pending; otherwise they start over.

Cancel: ``Storage.cancel_sweep`` from any process; the driver sees it within ``heartbeat_s``, stops every trial
and leaves finished cells as they are.

Ray: ``init_ray()`` starts an embedded single-node Ray (this machine's CPUs, no dashboard) unless ``address`` names
a cluster to join (the controller's settings pass ``RAY_ADDRESS``). Ray 2.60 authenticates with a token by default:
a driver joining a cluster needs ``RAY_AUTH_MODE=token`` and the cluster's ``RAY_AUTH_TOKEN`` (README, "Scaling out").
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from results import Storage, SweepRecord, SweepStatus, TransitionError, TrialRecord, TrialStatus, transient
from results.export import objective
from sweeps import HANG_GRACE_S, cell_time_limit

__all__ = [
    "ClusterError",
    "RunOptions",
    "RunSummary",
    "holder_dead",
    "init_ray",
    "plan_chunks",
    "prepare",
    "prestart_trial_workers",
    "run_sweep",
]

log = logging.getLogger(__name__)

CPU_CELLS_PER_TRIAL: Final = 16  # a trial's cells (its batched models: the model's cpu_chunk each, workers.bundle)
GPU_CELLS_PER_TRIAL: Final = 16  # not measured on a GPU yet: memory grows with K, so stay modest
TRIALS_PER_SLOT: Final = 2  # at least this many trials per concurrent slot, so the last wave is short


@dataclass(frozen=True)
class RunOptions:
    """How a sweep runs. Every field has a working default.

    Attributes:
        cpus_per_trial: CPUs Ray reserves for a trial; torch uses as many threads.
        gpus_per_trial: GPUs per trial (fractions share a GPU); None: 1 when the cluster has GPUs, else 0.
        cells_per_trial: at most this many cells per Tune trial; None: 16, fewer when that would leave slots idle.
        max_concurrent_trials: cap on trials running at once; None: as many as the resources allow.
        shares: how many sweeps share the cluster at once (the controller's ``max_concurrent_sweeps``): this one runs
            at most 1/shares of the trials that fit (at least one), so that each of them makes progress — Tune
            keeps a worker for its next trial, so a sweep that took every CPU first would hold them to its end.
        max_retries: restarts of a crashed trial (from its last checkpoint) before its cells fail.
        checkpoint_interval_s: seconds between a trial's checkpoints (0: after every epoch).
        lease_seconds: how long the driver's hold on the sweep lasts without renewal (a dead driver's sweep can be
            taken over after this, or at once from the same host).
        heartbeat_s: how often the driver renews its lease and checks for cancellation (a cancel takes effect
            within about this long).
        batched: train chunks as one batched model (True), one cell at a time (False), or as measured best (None).
        storage_path: Tune's experiment folder (checkpoints); on a cluster, a path every node shares. None: a folder
            under the system's temporary directory.
        data_dir: where workers find data sets (None: their default, ``~/.cache/wdgrid/data``).
        keep_tune_dir: keep Tune's folder after the run (it holds only checkpoints; results are in the store).
        hang_grace_s: seconds a training step may run past its cell's time limit before its worker process is
            ended and the chunk's unfinished cells fail (``workers.trainable``; a step stuck in native code).
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    cells_per_trial: int | None = None
    max_concurrent_trials: int | None = None
    shares: int = 1
    max_retries: int = 2
    checkpoint_interval_s: float = 30.0
    lease_seconds: float = 60.0
    heartbeat_s: float = 1.0
    batched: bool | None = None
    storage_path: str | None = None
    data_dir: str | None = None
    keep_tune_dir: bool = False
    hang_grace_s: float = HANG_GRACE_S

    def __post_init__(self) -> None:
        positive = {"cpus_per_trial": self.cpus_per_trial, "lease_seconds": self.lease_seconds}
        positive |= {"heartbeat_s": self.heartbeat_s, "hang_grace_s": self.hang_grace_s}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        counts = [("cells_per_trial", self.cells_per_trial), ("max_concurrent", self.max_concurrent_trials)]
        for name, count in [*counts, ("shares", self.shares)]:
            if count is not None and count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise ValueError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        if self.checkpoint_interval_s < 0:
            raise ValueError(f"checkpoint_interval_s must be >= 0, got {self.checkpoint_interval_s!r}")
        if self.heartbeat_s * 3 > self.lease_seconds:
            raise ValueError("lease_seconds must be at least 3 × heartbeat_s, so one late heartbeat loses nothing")


@dataclass(frozen=True)
class RunSummary:
    """What one ``run_sweep`` did: the sweep's final status and trial counts, how many cells were already finished
    before it started (``reused``), how many it finished, how many trial restarts it made, and its wall time (s)."""

    sweep_id: int
    status: SweepStatus
    counts: dict[TrialStatus, int]
    reused: int
    finished: int
    retries: int
    trials: int
    wall_time_s: float
    stopped_because: str | None = None


# --- Ray --------------------------------------------------------------------------------------------------------
class ClusterError(RuntimeError):
    """The Ray cluster cannot be joined (down, unreachable, a token it refuses) or cannot fit one trial."""


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Connect to Ray once per process: to ``address`` when given, else start an embedded single-node Ray with
    ``num_cpus`` (default: this machine's CPUs) and no dashboard. A no-op when connected. :class:`ClusterError` when a
    named cluster cannot be joined."""
    import ray

    if ray.is_initialized():
        return
    common: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # Ray raises ConnectionError, AuthenticationError, RuntimeError...
            token = "set" if os.environ.get("RAY_AUTH_TOKEN") else "not set"
            raise ClusterError(
                f"cannot join the Ray cluster at {address}: {type(exc).__name__}: {str(exc).splitlines()[0]} "
                f"(a cluster with token auth needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN, here {token})"
            ) from exc
        log.info("joined the Ray cluster at %s", address)
    else:
        # An embedded Ray is this process's own, with a token Ray generates: its warning that token authentication
        # is on asks nothing of the user, and `wdgrid run` printed it on every run.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # "local": always a new embedded Ray. Without it ray.init would join whatever cluster `ray start` last
        # started on this machine (/tmp/ray/ray_current_cluster), even one that is long dead.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **common)
        log.info("started an embedded Ray")


def prepare(address: str | None, options: RunOptions | None = None) -> int:
    """What the first seconds of a sweep's driver spend, done before it has a sweep (the controller's standby
    driver, ``wdgrid standby``): join Ray (``init_ray``) and import Ray Tune, the trainable and the result writer.
    Returns the trial slots a sweep would get now; :class:`ClusterError` when the cluster cannot be joined or no
    trial fits it. A standby then has the first trials' worker processes started (:func:`prestart_trial_workers`)."""
    init_ray(address)
    _tune_environment()
    from ray import tune  # noqa: F401  # imported now, not when the sweep arrives

    from service._result_writer import ResultWriter  # noqa: F401
    from workers.trainable import train_chunk  # noqa: F401

    return _trial_resources(options or RunOptions())[1]


PRESTART_KEEP_S: Final = 24 * 3600  # how long the raylet keeps a standby's unused prestarted workers at least


def prestart_trial_workers(slots: int, options: RunOptions | None = None) -> int:
    """Have this node's raylet start a worker process for each of the first ``slots`` trials now (at most as many
    as fit the node's CPUs), ready for Tune's trial actors; returns how many it was asked for (0 when it could not
    be asked: the optimization is skipped, nothing fails). For a driver that waits for its sweep (``wdgrid
    standby``): a driver that has its sweep already would only race its own first trial for the CPUs.

    Why: Ray gives an actor an idle worker only when that worker was started for the same job *and the same runtime
    environment*, and Tune creates every trial actor with a runtime environment of its own (``env_vars``, see
    ``ray.tune.execution.class_cache``); the workers Ray prestarts, and any a task has used, never match, so
    every sweep's first trial waited for a new process (Python, Ray's and Tune's imports: ~1.5 s of the ~1.8 s
    from ``POST`` to the first running cell on 2 cores, ``bench/sweep_start.py``). The raylet's ``PrestartWorkers``
    call (what Ray's own task submitter uses for its backlog) starts workers for a given job and runtime
    environment; asked with the one Tune will use, the first actors take them. The workers belong to this driver's
    job: they end with it. Ray exposes the call only as the raylet's gRPC service, so this speaks it with Ray's own
    channel helper (which adds the cluster's token)."""
    try:
        import ray
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc, runtime_environment_pb2
        from ray.runtime_env import RuntimeEnv
        from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

        context = ray.get_runtime_context()
        node = next(n for n in ray.nodes() if n["Alive"] and n["NodeID"] == context.get_node_id())
        count = min(slots, int(node["Resources"].get("CPU", 0) // (options or RunOptions()).cpus_per_trial))
        if count < 1:
            return 0
        # Tune's runtime environment for a trainable, built as Tune builds it (class_cache._ActorClassCache.get).
        env_vars = DEFAULT_ENV_VARS | {k: os.environ[k] for k in ENV_VARS_TO_PROPAGATE if k in os.environ}
        request = node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.PYTHON,
            job_id=bytes.fromhex(context.get_job_id()),
            runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(
                serialized_runtime_env=RuntimeEnv(env_vars=env_vars).serialize()
            ),
            keep_alive_duration_secs=PRESTART_KEEP_S,
            num_workers=count,
        )
        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        try:
            node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(request, timeout=10)
        finally:
            channel.close()
    except Exception as exc:  # an optimization: a Ray without the call, an unreachable raylet... cost a second
        log.info("no worker processes started ahead for the first trials: %s: %s", type(exc).__name__, exc)
        return 0
    log.info("asked the raylet for %d worker processes ready for the first trials", count)
    return count


def _tune_environment() -> None:
    # The store keeps every result: Tune's own CSV/JSON/TensorBoard loggers would write each report three more times.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A checkpoint per epoch is a choice (checkpoint_interval_s=0), not a mistake to warn about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's console output (experiment banner, trial tables) would fight the CLI's progress bar; verbose=0 silences
    # only the classic reporter.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # With the file loggers off, the result grid warns that it found no result files: the store has the results.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


# --- Planning ---------------------------------------------------------------------------------------------------
def plan_chunks(pending: Sequence[TrialRecord], *, slots: int, max_cells: int) -> list[list[TrialRecord]]:
    """Cut the pending cells of each bundle into nearly equal chunks of at most ``max_cells`` cells, and into
    enough chunks overall that ``slots`` concurrent trials all have work (``TRIALS_PER_SLOT`` per slot). Chunks
    keep the bundle's (α, λ) order; bundles keep their order in the store."""
    by_bundle: dict[str, list[TrialRecord]] = {}
    for t in pending:
        by_bundle.setdefault(t.bundle_id, []).append(t)
    target = max(1, slots * TRIALS_PER_SLOT)
    chunks = []
    for members in by_bundle.values():
        members.sort(key=lambda t: (t.lr, t.weight_decay))
        parts = max(math.ceil(len(members) / max_cells), math.ceil(target * len(members) / len(pending)))
        parts = min(parts, len(members))
        size, extra = divmod(len(members), parts)
        start = 0
        for i in range(parts):
            end = start + size + (1 if i < extra else 0)
            chunks.append(members[start:end])
            start = end
    return chunks


def holder_dead(holder: str) -> bool:
    """True when a driver id ``host:pid:nonce`` names a process on this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --- run_sweep --------------------------------------------------------------------------------------------------
def run_sweep(
    store: Storage,
    sweep_id: int,
    options: RunOptions | None = None,
    *,
    address: str | None = None,
    callbacks: Sequence[Any] = (),
) -> RunSummary:
    """Run every pending cell of a stored sweep on Ray Tune and return when the sweep is completed, failed or
    cancelled (see the module docstring). ``address`` joins a Ray cluster (else an embedded Ray); ``callbacks`` are
    extra ``tune.Callback`` objects (tests use them to kill workers)."""
    o = options or RunOptions()
    started = time.monotonic()
    sweep = store.get_sweep(sweep_id)
    if sweep.status in ("failed", "cancelled"):
        raise TransitionError(f"sweep {sweep_id} is {sweep.status}: resume it first (Storage.resume_sweep)")
    if sweep.status == "completed":
        counts = store.status_counts(sweep_id)
        return _summary(store, sweep_id, counts["completed"] + counts["diverged"], 0, 0, started, None)

    counts = store.status_counts(sweep_id)
    gpus, slots = 0.0, 0
    if counts["pending"] or counts["running"]:  # a sweep whose cells are all finished (e.g. reused) needs no Ray
        init_ray(address)  # before taking the sweep: a cluster that cannot be joined leaves it as it was
        gpus, slots = _trial_resources(o)
    driver_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    store.acquire_sweep(sweep_id, driver_id, lease_seconds=o.lease_seconds, holder_dead=holder_dead)
    tune_dir: Path | None = None
    try:
        store.set_sweep_status(sweep_id, "running")
        pending = _all_trials(store, sweep_id, "pending")
        counts = store.status_counts(sweep_id)
        reused = counts["completed"] + counts["diverged"]
        if not pending:
            _close(store, sweep_id)
            return _summary(store, sweep_id, reused, 0, 0, started, None)

        if not slots:  # cells were re-queued (resumed) after the check above
            init_ray(address)
            gpus, slots = _trial_resources(o)
        _tune_environment()
        from ray import tune

        from workers.trainable import train_chunk

        base = Path(o.storage_path or Path(tempfile.gettempdir()) / "wdgrid-tune")
        prefix = _tune_prefix(store.url, sweep)
        resumed = _resumable(store, sweep_id, pending, base / prefix)
        in_resumed = {t.id for _, chunk in resumed for t in chunk}
        max_cells = o.cells_per_trial or (GPU_CELLS_PER_TRIAL if gpus > 0 else CPU_CELLS_PER_TRIAL)
        fresh = [t for t in pending if t.id not in in_resumed]
        chunks = [chunk for _, chunk in resumed]
        chunks += plan_chunks(fresh, slots=slots, max_cells=max_cells) if fresh else []
        keyed = {f"{c[0].bundle_id}-{i}": c for i, c in enumerate(chunks)}
        origins = [str(folder) for folder, _ in resumed] + [None] * (len(chunks) - len(resumed))
        space = [
            {
                "key": key,
                "cells": [{"trial_id": t.id, "config": t.config} for t in chunk],
                "batched": o.batched,
                "threads": max(1, int(o.cpus_per_trial)),
                "data_dir": o.data_dir,
                "checkpoint_interval_s": o.checkpoint_interval_s,
                "time_limit_s": cell_time_limit(sweep.spec),
                "hang_grace_s": o.hang_grace_s,
                "resume_from": origin,
            }
            for (key, chunk), origin in zip(keyed.items(), origins, strict=True)
        ]
        if resumed:
            log.info("sweep %d: %d trials continue from checkpoints an earlier driver left", sweep_id, len(resumed))
        log.info("sweep %d: %d cells in %d trials, %d at a time", sweep_id, len(pending), len(chunks), slots)

        from service._result_writer import Chunk, Lease, ResultWriter, StopWhenAsked, chunk_dirname

        chunked = {k: Chunk(k, [t.id for t in c]) for k, c in keyed.items()}
        lease = Lease(o.lease_seconds, o.heartbeat_s)
        writer = ResultWriter(store, sweep_id, driver_id, chunked, lease, objective=objective(sweep).metric)
        tune_dir = base / f"{prefix}-{driver_id.rsplit(':', 1)[-1]}"
        tuner = tune.Tuner(
            tune.with_resources(train_chunk, {"cpu": o.cpus_per_trial, "gpu": gpus}),
            param_space={"chunk": tune.grid_search(space)},
            tune_config=tune.TuneConfig(
                reuse_actors=True,
                max_concurrent_trials=slots,  # this sweep's share of the cluster (RunOptions.shares)
                trial_dirname_creator=chunk_dirname,
            ),
            run_config=tune.RunConfig(
                name=tune_dir.name,
                storage_path=str(base),
                verbose=0,
                callbacks=[writer, *callbacks],
                stop=StopWhenAsked(writer),
                failure_config=tune.FailureConfig(max_failures=o.max_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        tuner.fit()
        if writer.stopping is None:
            _close(store, sweep_id)
            if not o.keep_tune_dir:  # finished: what earlier drivers left can never be resumed from again
                for old in base.glob(f"{prefix}-*"):
                    shutil.rmtree(old, ignore_errors=True)
        return _summary(
            store,
            sweep_id,
            reused,
            len(writer.progress.finished),
            writer.progress.retries,
            started,
            writer.stopping,
            trials=len(chunks),
        )
    except BaseException as exc:
        # Ctrl-C or an error of the driver itself: unfinished cells are cancelled, never left running. Not when the
        # store is what failed (unreachable, or its disk full, past the retries): it could not take the cancel either,
        # and the sweep is for the next driver to continue (the controller restarts one; `wdgrid run` resumes it).
        if transient(exc):
            raise
        current = store.get_sweep(sweep_id)
        if current.driver == driver_id and current.status in ("pending", "running"):
            store.cancel_sweep(sweep_id)
        raise
    finally:
        store.release_sweep(sweep_id, driver_id)
        if tune_dir is not None and not o.keep_tune_dir:
            shutil.rmtree(tune_dir, ignore_errors=True)


def _trial_resources(o: RunOptions) -> tuple[float, int]:
    """(GPUs per trial, trials that fit at once) on the connected Ray cluster; :class:`ClusterError` if none fits."""
    import ray

    resources = ray.cluster_resources()
    gpus = o.gpus_per_trial if o.gpus_per_trial is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    slots = int(resources.get("CPU", 0) // o.cpus_per_trial)
    if gpus > 0:
        slots = min(slots, int(resources.get("GPU", 0) // gpus))
    if slots >= 1:
        slots = max(1, slots // o.shares)
    if o.max_concurrent_trials:
        slots = min(slots, o.max_concurrent_trials)
    if slots < 1:
        raise ClusterError(
            f"no trial of {o.cpus_per_trial} CPUs and {gpus} GPUs fits on the Ray cluster "
            f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs): lower cpus_per_trial/gpus_per_trial"
        )
    return gpus, slots


def _all_trials(store: Storage, sweep_id: int, status: TrialStatus) -> list[TrialRecord]:
    out: list[TrialRecord] = []
    while True:
        page, count = store.trials(sweep_id, status=status, offset=len(out), limit=1000)
        out += page
        if not page or len(out) >= count:
            return out


def _tune_prefix(url: str, sweep: SweepRecord) -> str:
    """The start of the Tune folder names of this sweep's drivers: its id and a hash of the store and its creation
    time, so that sweep 1 of one database never picks up the checkpoints of sweep 1 of another."""
    key = hashlib.sha256(f"{url}|{sweep.id}|{sweep.created_at.isoformat()}".encode()).hexdigest()[:12]
    return f"sweep-{sweep.id}-{key}"


def _resumable(
    store: Storage, sweep_id: int, pending: list[TrialRecord], prefix: Path
) -> list[tuple[Path, list[TrialRecord]]]:
    """Checkpoints that earlier drivers of the sweep left in folders named ``prefix``-* (newest first) and that
    still fit the store: every cell the checkpoint holds as done is finished, every other one is pending (no cell
    in two). Returns (checkpoint folder, the chunk's trials in its cell order)."""
    from workers.trainable import CELLS_FILE  # imports Ray Tune: only when a sweep runs

    found = []
    for path in prefix.parent.glob(f"{prefix.name}-*/*/checkpoint_*/{CELLS_FILE}"):
        try:
            meta = json.loads(path.read_text())
            found.append((path.stat().st_mtime, path.parent, [int(t) for t in meta["trial_ids"]], set(meta["done"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half written when its driver died
    if not found:  # the usual case: read no more of the store
        return []
    finished: tuple[TrialStatus, ...] = ("completed", "diverged", "failed")
    trials = {t.id: t for t in pending} | {t.id: t for s in finished for t in _all_trials(store, sweep_id, s)}
    out: list[tuple[Path, list[TrialRecord]]] = []
    used: set[int] = set()
    for _, folder, ids, done in sorted(found, key=lambda f: f[0], reverse=True):
        if used & set(ids) or not all(t in trials for t in ids) or len(done) == len(ids):
            continue
        if all(trials[t].status in finished if i in done else trials[t].status == "pending" for i, t in enumerate(ids)):
            out.append((folder, [trials[t] for t in ids]))
            used |= set(ids)
    return out


def _close(store: Storage, sweep_id: int) -> None:
    """Give the sweep its final status from its trials: completed when every cell finished, failed when some
    failed; when cells were still waiting (Tune stopped early, e.g. on Ctrl-C), cancelled."""
    counts = store.status_counts(sweep_id)
    if counts["pending"] or counts["running"]:
        store.cancel_sweep(sweep_id)
    elif counts["failed"]:
        total = sum(counts.values())
        store.set_sweep_status(
            sweep_id, "failed", error=f"{counts['failed']} of {total} cells failed; resuming the sweep re-queues them"
        )
    else:
        store.set_sweep_status(sweep_id, "completed")


def _summary(
    store: Storage,
    sweep_id: int,
    reused: int,
    finished: int,
    retries: int,
    started: float,
    stopped: str | None,
    *,
    trials: int = 0,
) -> RunSummary:
    return RunSummary(
        sweep_id,
        store.get_sweep(sweep_id).status,
        store.status_counts(sweep_id),
        reused,
        finished,
        retries,
        trials,
        time.monotonic() - started,
        stopped,
    )
