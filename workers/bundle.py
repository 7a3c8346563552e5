"""Train a bundle — grid cells that differ only in (α, λ) — in one process, loading each batch once.

Cells of a bundle share data set, model, optimizer, schedule, epochs, batch size, seed, device and dtype, so they
share the initialization and every batch. For models whose forward pass is a pure function (``workers.models.
batchable``) the K cells train as **one batched model**: the K copies of the weights are stacked along a leading
dimension (BatchNorm statistics too, so every cell normalizes with its own), and the paper's optimizer steps all
cells at once with per-cell α and λ tensors. The fused loss is the *sum of the per-cell mean losses*, so every cell
gets exactly its own gradient; each cell reports the batched model's wall time. Other models (Shake-Shake draws
random numbers inside its forward pass) train one cell after another on the shared data.

The batched forward pass is the model's own ``batched_forward`` where it has one (``cnn1d``: the cells side by side
as channel groups, so every layer is one grouped convolution or one ``bmm``), else ``torch.func.vmap`` over
``functional_call``. On the CPU only the explicit form pays (``bench/train_throughput.py``: ~2x at K = 16 for
cnn1d; vmap over resnet20's convolutions runs at half speed), so by default the CPU batches explicit models only.
``torch.compile`` of either form was measured slower than the eager explicit form here, and is not used.

Checkpoints: ``on_checkpoint(state)`` receives the whole bundle's state at every epoch boundary and after every
cell (one at a time) or chunk (batched) finishes — the finished cells' results under ``"done"``, the running unit's
training state under ``"inner"`` — and ``train_bundle(configs, resume=state)`` continues from it. The state holds
only tensors, numbers, strings, lists and dicts, some of them the live training tensors: serialize it (``torch.save``)
during the call. On the CPU a resumed bundle ends with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from workers.data import DeviceData
from workers.models import batchable, build_model, explicitly_batched
from workers.optimizers import make_optimizer, set_eta
from workers.train import (
    EVAL_BATCH,
    EpochMetrics,
    TrainConfig,
    TrialResult,
    TrialStatus,
    build_schedule,
    epoch_batches,
    load_data,
    resolve_device,
    steps_per_epoch,
    train,
)

__all__ = ["BundleState", "ResumeMismatchError", "check_bundle", "finished_cells", "train_bundle"]

PER_CELL = frozenset({"lr", "weight_decay"})


class ResumeMismatchError(ValueError):
    """The state passed as ``resume`` was trained another way (batched vs one cell after another)."""


CPU_CHUNK = 16  # cells per batched model on a CPU

ForwardFn = Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], Tensor]
BundleState = dict[str, Any]
"""A bundle's checkpoint: ``{"mode": "batched"|"sequential", "chunk": cells per unit, "start": index of the unit
in training, "done": {cell index: its result as a dict}, "inner": the unit's training state or None}``."""


def check_bundle(configs: Sequence[TrainConfig]) -> None:
    """Raise ``ValueError`` unless the configs differ only in ``lr`` and ``weight_decay``."""
    if not configs:
        raise ValueError("a bundle needs at least one config")
    first = configs[0]
    for i, cfg in enumerate(configs[1:], start=1):
        for f in fields(TrainConfig):
            if f.name not in PER_CELL and getattr(cfg, f.name) != getattr(first, f.name):
                raise ValueError(f"bundle cell {i} differs from cell 0 in {f.name!r}: only lr and weight_decay may")


def train_bundle(
    configs: Sequence[TrainConfig | Mapping[str, Any]],
    on_epoch: Callable[[int, EpochMetrics], None] | None = None,
    *,
    data: DeviceData | None = None,
    batched: bool | None = None,
    on_checkpoint: Callable[[BundleState], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> list[TrialResult]:
    """Train every cell of a bundle; returns one :class:`TrialResult` per config, in order.

    Args:
        configs: cells that differ only in ``lr`` (α) and ``weight_decay`` (raw λ per step).
        on_epoch: called with (cell index, that cell's :class:`EpochMetrics`) after every epoch.
        data: the data set on the device; loaded once from the registry when ``None``.
        batched: force (``True``) or forbid (``False``) the batched model; ``None`` batches where it is faster:
            on a GPU whenever the model can be batched, on the CPU when it has an explicit batched forward.
        on_checkpoint: called with the whole bundle's state (:data:`BundleState`) at every epoch boundary and
            after every cell or chunk finishes.
        resume: a state from ``on_checkpoint``: finished cells are not trained again, the running unit continues.
    """
    cfgs = [c if isinstance(c, TrainConfig) else TrainConfig.from_dict(c) for c in configs]
    check_bundle(cfgs)
    device = resolve_device(cfgs[0].device)
    data = data if data is not None else load_data(cfgs[0], device)
    can_batch = batchable(cfgs[0].model)
    if batched and not can_batch:
        raise ValueError(f"model {cfgs[0].model!r} cannot be batched: train its cells one after another")
    if batched is None:
        # Measured (bench/train_throughput.py): on the CPU, vmap over resnet20's convolutions runs at half the speed
        # of one cell at a time; only models with an explicit batched forward gain there. On a GPU, batching pays.
        batched = can_batch and (explicitly_batched(cfgs[0].model) or device.type == "cuda")
    batched = batched and len(cfgs) > 1
    # Measured on CPU (bench/train_throughput.py): throughput per cell peaks around K = 8..16 and falls beyond, as the
    # activations of more cells leave the caches; larger bundles train in chunks of CPU_CHUNK on the shared data.
    chunk = (CPU_CHUNK if device.type == "cpu" else len(cfgs)) if batched else 1
    mode = "batched" if batched else "sequential"
    done: dict[int, TrialResult] = {}
    start, inner = 0, None
    if resume is not None:
        if resume["mode"] != mode:
            raise ResumeMismatchError(f"the checkpoint trained this bundle {resume['mode']}, not {mode}: pass batched=")
        chunk, start, inner = int(resume["chunk"]), int(resume["start"]), resume["inner"]
        done = {int(i): _result_from_dict(cfgs[int(i)], r) for i, r in resume["done"].items()}

    def checkpoint(unit: int, state: Mapping[str, Any] | None) -> None:
        if on_checkpoint is not None:
            on_checkpoint(
                {
                    "mode": mode,
                    "chunk": chunk,
                    "start": unit,
                    "done": {i: _result_as_dict(r) for i, r in done.items()},
                    "inner": state,
                }
            )

    for unit in range(start, len(cfgs), chunk):
        members = range(unit, min(unit + chunk, len(cfgs)))
        resume_unit = inner if unit == start else None
        if batched:
            results = _train_batched(
                [cfgs[i] for i in members],
                _offset(on_epoch, unit),
                data,
                device,
                on_checkpoint=lambda state, unit=unit: checkpoint(unit, state),  # type: ignore[misc]
                resume=resume_unit,
            )
        else:
            results = [
                train(
                    cfgs[unit],
                    _for_cell(on_epoch, unit),
                    data=data,
                    on_checkpoint=lambda state, unit=unit: checkpoint(unit, state),  # type: ignore[misc]
                    resume=resume_unit,
                )
            ]
        done.update(zip(members, results, strict=True))
        checkpoint(unit + chunk, None)
    return [done[i] for i in range(len(cfgs))]


def finished_cells(state: BundleState) -> dict[int, TrialResult]:
    """The cells a checkpoint holds as finished, by index, with their results (configs are not in a checkpoint:
    their ``config`` is a placeholder of the first cell's type; use the index)."""
    return {int(i): _result_from_dict(None, r) for i, r in state["done"].items()}


def _result_as_dict(r: TrialResult) -> dict[str, Any]:
    return {
        "status": r.status,
        "history": [asdict(m) for m in r.history],
        "device": r.device,
        "wall_time_s": r.wall_time_s,
        "diverged_at_epoch": r.diverged_at_epoch,
    }


def _result_from_dict(config: TrainConfig | None, d: Mapping[str, Any]) -> TrialResult:
    return TrialResult(
        config=config,  # type: ignore[arg-type]  # finished_cells: the caller knows the config by index
        status=d["status"],
        history=[EpochMetrics(**m) for m in d["history"]],
        device=str(d["device"]),
        wall_time_s=float(d["wall_time_s"]),
        diverged_at_epoch=d["diverged_at_epoch"],
    )


def _offset(
    on_epoch: Callable[[int, EpochMetrics], None] | None, start: int
) -> Callable[[int, EpochMetrics], None] | None:
    if on_epoch is None:
        return None
    callback = on_epoch
    return lambda i, metrics: callback(start + i, metrics)


def _for_cell(on_epoch: Callable[[int, EpochMetrics], None] | None, i: int) -> Callable[[EpochMetrics], None] | None:
    if on_epoch is None:
        return None
    callback = on_epoch
    return lambda metrics: callback(i, metrics)


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


def _train_batched(
    cfgs: list[TrainConfig],
    on_epoch: Callable[[int, EpochMetrics], None] | None,
    data: DeviceData,
    device: torch.device,
    *,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> list[TrialResult]:
    cfg, k = cfgs[0], len(cfgs)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32

    # --- Setup: one initialization (the shared seed), stacked K times -------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device=device, dtype=dtype)
    params = _stack(dict(model.named_parameters()), k, grad=True)
    buffers = _stack(dict(model.named_buffers()), k, grad=False)
    lrs = torch.tensor([c.lr for c in cfgs], dtype=dtype, device=device)
    wds = torch.tensor([c.weight_decay for c in cfgs], dtype=dtype, device=device)
    optimizer = make_optimizer(cfg.optimizer, list(params.values()), lr=lrs, weight_decay=wds)
    schedule = build_schedule(cfg, data.n_train)
    generator = torch.Generator().manual_seed(cfg.seed)

    cells_forward = _forward_fn(model)

    # --- Epoch loop ---------------------------------------------------------------------------------------------
    histories: list[list[EpochMetrics]] = [[] for _ in cfgs]
    status: list[TrialStatus] = ["completed"] * k
    diverged_at: list[int | None] = [None] * k
    alive = torch.ones(k, dtype=torch.bool, device=device)
    check_each_step = device.type == "cpu"
    start_epoch, step, wall_before = 0, 0, 0.0
    if resume is not None:
        with torch.no_grad():
            for name, t in params.items():
                t.copy_(resume["params"][name])
            for name, t in buffers.items():
                t.copy_(resume["buffers"][name])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["rng"]["data"])
        torch.set_rng_state(resume["rng"]["torch"])
        start_epoch, step, wall_before = int(resume["epoch"]), int(resume["step"]), float(resume["wall_time_s"])
        histories = [[EpochMetrics(**m) for m in h] for h in resume["histories"]]
        status, diverged_at = list(resume["status"]), list(resume["diverged_at"])
        alive.copy_(torch.as_tensor(resume["alive"], dtype=torch.bool))
    started = time.perf_counter()
    n_seen = min(data.n_train, steps_per_epoch(data.n_train, cfg.batch_size) * cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
        wrong = torch.zeros(k, device=device, dtype=torch.long)
        eta = 1.0
        for idx in epoch_batches(data.n_train, cfg.batch_size, generator, device):
            x, y = data.train_batch(idx, generator, dtype)
            logits = cells_forward(params, buffers, x)  # K×B×classes
            losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none")
            losses = losses.view(k, -1).mean(dim=1)  # each cell's own mean loss
            finite = torch.isfinite(losses)
            if check_each_step and not bool(finite[alive].all()):
                _mark_diverged(~finite & alive, alive, status, diverged_at, epoch + 1)
            # Sum of per-cell means: every cell gets exactly its own gradient; diverged cells contribute nothing.
            total = torch.where(alive, losses, torch.zeros_like(losses)).sum()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            eta = schedule.multiplier(step)
            set_eta(optimizer, eta)
            optimizer.step()
            step += 1
            loss_sum += losses.detach().double() * y.shape[0]
            wrong += (logits.detach().argmax(2) != y).sum(dim=1)

        model.eval()
        test_loss_sum, test_wrong = _evaluate(cells_forward, params, buffers, data, dtype, k)
        # One host sync per epoch.
        train_loss = (loss_sum / n_seen).tolist()
        test_loss = (test_loss_sum / data.y_test.shape[0]).tolist()
        train_err = (100.0 * wrong.double() / n_seen).tolist()
        test_err = (100.0 * test_wrong.double() / data.y_test.shape[0]).tolist()
        wall = wall_before + time.perf_counter() - started
        for i in range(k):
            if status[i] != "completed":
                continue
            if not (math.isfinite(train_loss[i]) and math.isfinite(test_loss[i])):
                _mark_diverged(torch.arange(k, device=device) == i, alive, status, diverged_at, epoch + 1)
                continue
            metrics = EpochMetrics(epoch + 1, train_loss[i], train_err[i], test_loss[i], test_err[i], eta, wall)
            histories[i].append(metrics)
            if on_epoch is not None:
                on_epoch(i, metrics)
        if on_checkpoint is not None:
            on_checkpoint(
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "params": {name: t.detach() for name, t in params.items()},
                    "buffers": buffers,
                    "optimizer": optimizer.state_dict(),
                    "rng": {"data": generator.get_state(), "torch": torch.get_rng_state()},
                    "histories": [[asdict(m) for m in h] for h in histories],
                    "status": list(status),
                    "diverged_at": list(diverged_at),
                    "alive": alive.tolist(),
                    "wall_time_s": wall,
                }
            )
        if not bool(alive.any()):
            break

    wall = wall_before + time.perf_counter() - started
    return [
        TrialResult(c, status[i], histories[i], str(device), wall, diverged_at_epoch=diverged_at[i])
        for i, c in enumerate(cfgs)
    ]


def _mark_diverged(
    cells: Tensor, alive: Tensor, status: list[TrialStatus], diverged_at: list[int | None], epoch: int
) -> None:
    for i in torch.nonzero(cells).flatten().tolist():
        if status[i] == "completed":
            status[i], diverged_at[i] = "diverged", epoch
    alive &= ~cells


def _evaluate(
    cells_forward: Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], Tensor],
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    data: DeviceData,
    dtype: torch.dtype,
    k: int,
) -> tuple[Tensor, Tensor]:
    """Per-cell (sum of test cross-entropy, wrong top-1 predictions) as device tensors of shape (K,)."""
    loss_sum = torch.zeros(k, device=data.device, dtype=torch.float64)
    wrong = torch.zeros(k, device=data.device, dtype=torch.long)
    x_all = data.test_inputs(dtype)
    with torch.no_grad():
        for start in range(0, x_all.shape[0], EVAL_BATCH):
            x, y = x_all[start : start + EVAL_BATCH], data.y_test[start : start + EVAL_BATCH]
            logits = cells_forward(params, buffers, x)
            losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none")
            loss_sum += losses.view(k, -1).double().sum(dim=1)
            wrong += (logits.argmax(2) != y).sum(dim=1)
    return loss_sum, wrong
