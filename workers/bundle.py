"""Train a bundle — grid cells that differ only in (α, λ) — in one process, loading each batch once.

Cells of a bundle share data set, model, optimizer, schedule, epochs, batch size, seed and precision, so they
share the initialization and every batch. Every path — one cell after another, or K cells as one batched model —
runs the one training loop (``workers.train.train_cells``) with the one precision policy, so a cell's numbers do not
depend on how it was bundled or chunked beyond the float rounding of the batched arithmetic.

For models whose forward pass is a pure function of weights and input (decided by a check, :func:`batchable`, not
by a list of names) the K cells train as **one batched model**: the K copies of the weights are stacked along a leading
dimension (BatchNorm statistics too, so every cell normalizes with its own), and the paper's optimizer steps all
cells at once with per-cell α and λ tensors. The fused loss is the *sum of the per-cell mean losses*, so every cell
gets exactly its own gradient; each cell reports the batched model's wall time. Other models (Shake-Shake draws
random numbers inside its forward pass) train one cell after another on the shared data.

The batched forward pass is the model's own ``batched_forward`` where it has one (``cnn1d`` and ``digits_cnn``: the
cells side by side as channel groups, so every layer is one grouped convolution or one ``bmm``; ``mlp``: one matmul
then one ``baddbmm`` per layer), else ``torch.func.vmap`` over ``functional_call``. On the CPU only the explicit
form pays (``bench/train_throughput.py``: ~2.3x for cnn1d in chunks of 8, ~1.7x for mlp and digits_cnn at K = 16;
vmap over resnet20's convolutions runs at half speed), so by default the CPU batches explicit models only, in chunks
of the model's ``cpu_chunk`` (else ``CPU_CHUNK``) cells. ``torch.compile`` (inductor) of the batched step was
measured slower than eager here (``bench/batched_step.py --compile``: 21 against 19 ms per step), and is not used.

Checkpoints: ``on_checkpoint(state)`` receives the whole bundle's state at every epoch boundary and after every
cell (one at a time) or chunk (batched) finishes — the finished cells' results under ``"done"``, the running unit's
training state under ``"inner"`` — and ``train_bundle(configs, resume=state)`` continues from it. The state holds
only tensors, numbers, strings, lists and dicts, some of them the live training tensors: serialize it (``torch.save``)
during the call. On the CPU a resumed bundle ends with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from sweeps import TrainingConfig
from workers.data import Data
from workers.models import build_model
from workers.optimizers import make_optimizer
from workers.train import (
    CellResult,
    Cells,
    EpochMetrics,
    OneCell,
    PrecisionPolicy,
    load_data,
    resolve_device,
    train_cells,
)
from workers.trainer import SharedData, run_trainer

__all__ = [
    "BundleState",
    "ResumeMismatchError",
    "StackedCells",
    "batchable",
    "check_bundle",
    "cpu_chunk",
    "finished_cells",
    "train_bundle",
]

log = logging.getLogger(__name__)

PER_CELL = frozenset({"lr", "weight_decay"})


class ResumeMismatchError(ValueError):
    """The state passed as ``resume`` was trained another way (batched vs one cell after another)."""


CPU_CHUNK = 16  # cells per batched model on a CPU, for models without a ``cpu_chunk`` of their own

ForwardFn = Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], Tensor]
BundleState = dict[str, Any]
"""A bundle's checkpoint: ``{"mode": "batched"|"sequential", "chunk": cells per unit, "start": index of the unit
in training, "done": {cell index: its result as a dict}, "inner": the unit's training state or None}``."""


def check_bundle(configs: Sequence[TrainingConfig]) -> None:
    """Raise ``ValueError`` unless the configs differ only in ``lr`` and ``weight_decay``."""
    if not configs:
        raise ValueError("a bundle needs at least one config")
    first = configs[0]
    for i, cfg in enumerate(configs[1:], start=1):
        for f in fields(TrainingConfig):
            if f.name not in PER_CELL and getattr(cfg, f.name) != getattr(first, f.name):
                raise ValueError(f"bundle cell {i} differs from cell 0 in {f.name!r}: only lr and weight_decay may")


class StackedCells(Cells):
    """K cells as one batched model: every parameter and buffer stacked along a new leading dimension (BatchNorm
    statistics too, so every cell normalizes with its own), one optimizer with per-cell α and λ tensors."""

    def __init__(self, configs: Sequence[TrainingConfig], data: Data, device: torch.device, policy: PrecisionPolicy):
        cfg, self.k = configs[0], len(configs)
        torch.manual_seed(cfg.seed)  # one initialization (the shared seed), stacked K times
        self.model = build_model(cfg.model, data.input_shape, data.n_classes, **cfg.model_args)
        self.model = self.model.to(device=device, dtype=policy.dtype)
        self.params = _stack(dict(self.model.named_parameters()), self.k, grad=True)
        self.buffers = _stack(dict(self.model.named_buffers()), self.k, grad=False)
        lrs = torch.tensor([c.lr for c in configs], dtype=policy.dtype, device=device)
        wds = torch.tensor([c.weight_decay for c in configs], dtype=policy.dtype, device=device)
        self.optimizer = make_optimizer(cfg.optimizer, list(self.params.values()), lr=lrs, weight_decay=wds)
        self._forward = _forward_fn(self.model)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self.params, self.buffers, x)

    def train(self, mode: bool) -> None:
        self.model.train(mode)  # the stacked forward runs in the module's mode

    def weights(self) -> dict[str, Any]:
        return {"params": {name: t.detach() for name, t in self.params.items()}, "buffers": self.buffers}

    def load_weights(self, state: Mapping[str, Any]) -> None:
        for name, t in self.params.items():
            t.copy_(state["params"][name])
        for name, t in self.buffers.items():
            t.copy_(state["buffers"][name])


def batchable(config: TrainingConfig, data: Data) -> str:
    """How K cells of ``config``'s model can train as one: ``explicit`` (the model has its own ``batched_forward``),
    ``vmap`` (its forward pass is a pure function of weights and input: ``torch.func.vmap`` over stacked weights
    gives each cell's own output), or ``no`` (it draws random numbers in its forward pass, like Shake-Shake or
    dropout, or vmap cannot run it). Decided by a check on a tiny batch (a copy of the model, in training mode, two
    forward passes compared, then K = 2 stacked copies against the model itself), cached per model, arguments and
    input shape."""
    return _checked(config, data)[0]


def cpu_chunk(config: TrainingConfig, data: Data) -> int:
    """Cells per batched model on a CPU: the model's own ``cpu_chunk`` where it has one (measured best for it), else
    ``CPU_CHUNK``. Larger bundles train in chunks of this size, one after another."""
    return _checked(config, data)[1]


def _checked(config: TrainingConfig, data: Data) -> tuple[str, int]:
    key = json.dumps([config.model, dict(config.model_args), list(data.input_shape), data.n_classes], sort_keys=True)
    if key not in _BATCHABLE:
        _BATCHABLE[key] = _check_batchable(config.model, dict(config.model_args), data)
    return _BATCHABLE[key]


_BATCHABLE: dict[str, tuple[str, int]] = {}  # per worker process: the check builds the model once


def _check_batchable(name: str, args: dict[str, Any], data: Data) -> tuple[str, int]:
    rng = torch.get_rng_state()  # the check must not move the training's RNG
    try:
        torch.manual_seed(0)
        model = build_model(name, data.input_shape, data.n_classes, **args)
        chunk = int(getattr(model, "cpu_chunk", CPU_CHUNK))
        return _how_batchable(name, model, data), max(1, chunk)
    finally:
        torch.set_rng_state(rng)


def _how_batchable(name: str, model: nn.Module, data: Data) -> str:
    try:
        if getattr(model, "batched_forward", None) is not None:
            return "explicit"
        x = data.sample(4, torch.float32).cpu()
        model = copy.deepcopy(model).train()
        with torch.no_grad():
            first, again = model(x), model(x)
            if not torch.equal(first, again):
                return "no"
            params = _stack(dict(model.named_parameters()), 2, grad=False)
            buffers = _stack(dict(model.named_buffers()), 2, grad=False)
            both = _forward_fn(model)(params, buffers, x)
        same = all(torch.allclose(both[i], first, rtol=1e-4, atol=1e-5) for i in range(2))
        return "vmap" if same else "no"
    except Exception as exc:  # vmap cannot trace every module: then it is not batchable, and that is all
        log.info("model %r cannot be vmapped (%s: %s)", name, type(exc).__name__, exc)
        return "no"


def train_bundle(
    configs: Sequence[TrainingConfig | Mapping[str, Any]],
    on_epoch: Callable[[int, EpochMetrics], None] | None = None,
    *,
    device: str | torch.device = "auto",
    data_dir: str | Path | None = None,
    data: Data | None = None,
    batched: bool | None = None,
    on_checkpoint: Callable[[BundleState], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    time_limit_s: float | None = None,
) -> list[CellResult]:
    """Train every cell of a bundle; returns one :class:`~workers.train.CellResult` per config, in order.

    Args:
        configs: cells that differ only in ``lr`` (α) and ``weight_decay`` (raw λ per step).
        on_epoch: called with (cell index, that cell's :class:`EpochMetrics`) after every epoch.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        data_dir: where data sets live (None: ``workers.data.DEFAULT_DATA_DIR``).
        data: the data set on the device; loaded once when ``None``.
        batched: force (``True``) or forbid (``False``) the batched model; ``None`` batches where it is faster:
            on a GPU whenever the model can be batched, on the CPU when it has an explicit batched forward.
        on_checkpoint: called with the whole bundle's state (:data:`BundleState`) at every epoch boundary and
            after every cell or chunk finishes.
        resume: a state from ``on_checkpoint``: finished cells are not trained again, the running unit continues.
        time_limit_s: seconds each unit (one cell, or one batched chunk) may train, resumes included; past it its
            cells end ``timed_out`` (finished: they are not trained again).
    """
    cfgs = [c if isinstance(c, TrainingConfig) else TrainingConfig.from_dict(c) for c in configs]
    check_bundle(cfgs)
    where = resolve_device(device)
    if cfgs[0].trainer is not None:
        if batched:
            raise ValueError(f"trainer {cfgs[0].trainer!r} owns its loop: its cells train one after another")
        return _train_with_trainer(cfgs, on_epoch, where, data_dir, data, on_checkpoint, resume, time_limit_s)
    data = data if data is not None else load_data(cfgs[0], where, data_dir)
    policy = PrecisionPolicy.of(cfgs[0].precision)
    kind = batchable(cfgs[0], data) if len(cfgs) > 1 or batched else "no"
    if batched and kind == "no":
        raise ValueError(f"model {cfgs[0].model!r} cannot be batched: train its cells one after another")
    if batched is None:
        # Measured (bench/train_throughput.py): on the CPU, vmap over resnet20's convolutions runs at half the speed
        # of one cell at a time; only models with an explicit batched forward gain there. On a GPU, batching pays.
        batched = kind == "explicit" or (kind == "vmap" and where.type == "cuda")
        if kind == "no" and len(cfgs) > 1:
            log.info("model %r is not a pure function of weights and input: one cell at a time", cfgs[0].model)
    batched = batched and len(cfgs) > 1
    # Measured on CPU (bench/train_throughput.py, bench/batched_step.py): throughput per cell peaks around K = 8..16
    # and falls beyond, as the activations of more cells leave the caches; larger bundles train in chunks on the
    # shared data.
    chunk = (cpu_chunk(cfgs[0], data) if where.type == "cpu" else len(cfgs)) if batched else 1
    mode = "batched" if batched else "sequential"
    done: dict[int, CellResult] = {}
    start, inner = 0, None
    if resume is not None:
        if resume["mode"] != mode:
            raise ResumeMismatchError(f"the checkpoint trained this bundle {resume['mode']}, not {mode}: pass batched=")
        chunk, start, inner = int(resume["chunk"]), int(resume["start"]), resume["inner"]
        done = {int(i): _result_from_dict(cfgs[int(i)], r) for i, r in resume["done"].items()}

    def checkpoint(unit: int, state: Mapping[str, Any] | None) -> None:
        if on_checkpoint is not None:
            on_checkpoint(_state(mode, chunk, unit, done, state))

    for unit in range(start, len(cfgs), chunk):
        members = [cfgs[i] for i in range(unit, min(unit + chunk, len(cfgs)))]
        cells = StackedCells(members, data, where, policy) if batched else OneCell(members[0], data, where, policy)
        results = train_cells(
            members,
            cells,
            data,
            where,
            _offset(on_epoch, unit),
            on_checkpoint=lambda state, unit=unit: checkpoint(unit, state),  # type: ignore[misc]
            resume=inner if unit == start else None,
            time_limit_s=time_limit_s,
        )
        done.update(zip(range(unit, unit + len(members)), results, strict=True))
        checkpoint(unit + chunk, None)
    return [done[i] for i in range(len(cfgs))]


def _train_with_trainer(
    cfgs: Sequence[TrainingConfig],
    on_epoch: Callable[[int, EpochMetrics], None] | None,
    where: torch.device,
    data_dir: str | Path | None,
    data: Data | None,
    on_checkpoint: Callable[[BundleState], None] | None,
    resume: Mapping[str, Any] | None,
    time_limit_s: float | None,
) -> list[CellResult]:
    """A trainer plugin's cells, one after another, checkpointed like the sequential path: the finished cells under
    ``"done"``, the running cell's trainer state (when its trainer checkpoints) under ``"inner"``. The data set is
    loaded once, when the first trainer asks for it."""
    done: dict[int, CellResult] = {}
    start, inner = 0, None
    if resume is not None:
        if resume["mode"] != "sequential":
            raise ResumeMismatchError(f"the checkpoint trained this bundle {resume['mode']}, not sequential")
        start, inner = int(resume["start"]), resume["inner"]
        done = {int(i): _result_from_dict(cfgs[int(i)], r) for i, r in resume["done"].items()}
    shared = SharedData(data)

    def checkpoint(unit: int, state: Mapping[str, Any] | None) -> None:
        if on_checkpoint is not None:
            on_checkpoint(_state("sequential", 1, unit, done, state))

    for unit in range(start, len(cfgs)):
        done[unit] = run_trainer(
            cfgs[unit],
            None if on_epoch is None else functools.partial(on_epoch, unit),
            device=where,
            data_dir=data_dir,
            data=shared,
            on_checkpoint=lambda state, unit=unit: checkpoint(unit, state),  # type: ignore[misc]
            resume=inner if unit == start else None,
            time_limit_s=time_limit_s,
        )
        checkpoint(unit + 1, None)
    return [done[i] for i in range(len(cfgs))]


def _state(
    mode: str, chunk: int, unit: int, done: Mapping[int, CellResult], inner: Mapping[str, Any] | None
) -> BundleState:
    """A bundle's checkpoint (:data:`BundleState`): how it trains, where it is, what is done, the running unit."""
    return {
        "mode": mode,
        "chunk": chunk,
        "start": unit,
        "done": {i: _result_as_dict(r) for i, r in done.items()},
        "inner": inner,
    }


def finished_cells(state: BundleState) -> dict[int, CellResult]:
    """The cells a checkpoint holds as finished, by index, with their results (configs are not in a checkpoint:
    their ``config`` is a placeholder; use the index)."""
    return {int(i): _result_from_dict(None, r) for i, r in state["done"].items()}


def _result_as_dict(r: CellResult) -> dict[str, Any]:
    return {
        "status": r.status,
        "history": [asdict(m) for m in r.history],
        "device": r.device,
        "wall_time_s": r.wall_time_s,
        "diverged_at_epoch": r.diverged_at_epoch,
        "error": r.error,
    }


def _result_from_dict(config: TrainingConfig | None, d: Mapping[str, Any]) -> CellResult:
    return CellResult(
        config=config,  # type: ignore[arg-type]  # finished_cells: the caller knows the config by index
        status=d["status"],
        history=[EpochMetrics(**m) for m in d["history"]],
        device=str(d["device"]),
        wall_time_s=float(d["wall_time_s"]),
        diverged_at_epoch=d["diverged_at_epoch"],
        error=d.get("error"),
    )


def _offset(
    on_epoch: Callable[[int, EpochMetrics], None] | None, start: int
) -> Callable[[int, EpochMetrics], None] | None:
    if on_epoch is None:
        return None
    callback = on_epoch
    return lambda i, metrics: callback(start + i, metrics)


def _stack(tensors: dict[str, Tensor], k: int, grad: bool) -> dict[str, Tensor]:
    return {
        name: t.detach().unsqueeze(0).repeat(k, *([1] * t.dim())).requires_grad_(grad and t.is_floating_point())
        for name, t in tensors.items()
    }


def _forward_fn(model: nn.Module) -> ForwardFn:
    """K stacked weights and one shared batch -> K×B×classes logits, in the module's current train/eval mode."""
    explicit = getattr(model, "batched_forward", None)
    if explicit is not None:
        return explicit

    def forward(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (p, b), (x,))

    return vmap(forward, in_dims=(0, 0, None))
