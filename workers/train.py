"""The training loop — one step, one epoch, one precision policy — and ``train(config) -> CellResult`` for one cell.
Runs without Ray, FastAPI or a database.

Reads top to bottom: Precision / Cells / The loop / One cell (results and setup, shared with trainer plugins, are
in ``workers.run``). The loop trains K cells that share
everything but (α, λ) — K = 1 for ``train()``, K stacked copies for a batched bundle (``workers.bundle``) — so
every path takes exactly the same steps: the data set lives whole on the training device (``workers.data``); each
step gathers a batch by index, augments it on the device, computes each cell's mean cross-entropy, and takes one step
of the paper's optimizer with η_t from the schedule. After every epoch it measures train loss and error (over the
epoch's batches, as trained), test loss and top-1 test error (percent, the paper's metric), η_t and wall time, and
hands them to ``on_epoch``. A non-finite loss ends a cell at once with status ``diverged``: a result, not a failure.

Precision is part of a cell's :class:`~sweeps.TrainingConfig` (and so of its id): ``float32``, ``float64``, or
``bfloat16`` — float32 weights, bf16 autocast forward passes, image batches channels-last. The loop applies it in
one place (:class:`PrecisionPolicy`), whatever K is, so one cell id never names two different computations.

Determinism: the seed fixes the initialization (torch's global RNG), the batch order and the augmentation (a CPU
generator of their own); on CPU two runs with the same config give identical numbers. At epoch boundaries the whole
state (weights, optimizer, epoch and step, RNG states, histories) goes to ``on_checkpoint``; ``resume=state``
continues from it and ends with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from sweeps import TrainingConfig
from workers.data import Data, steps_per_epoch
from workers.models import build_model
from workers.optimizers import make_optimizer, set_eta
from workers.run import (
    CellResult,
    EpochMetrics,
    RunStatus,
    StopTraining,
    TimeLimitExceeded,
    TrainingDeadline,
    build_schedule,
    keep_freed_memory,
    load_data,
    resolve_device,
    time_limit_error,
)
from workers.trainer import run_trainer

__all__ = [
    "CellResult",
    "Cells",
    "EpochMetrics",
    "PrecisionPolicy",
    "RunStatus",
    "StopTraining",
    "cross_entropies",
    "load_data",
    "resolve_device",
    "steps_per_epoch",
    "train",
    "train_cells",
]

EVAL_BATCH = 1024  # test examples per forward pass when measuring


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --- Precision --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrecisionPolicy:
    """How a config's ``precision`` runs: the dtype of weights, optimizer state and inputs; whether forward passes
    run under bf16 autocast (losses are then taken in float32); whether image batches go channels-last."""

    dtype: torch.dtype
    autocast: bool
    channels_last: bool

    @classmethod
    def of(cls, precision: str) -> PrecisionPolicy:
        if precision == "float64":
            return cls(torch.float64, autocast=False, channels_last=False)
        if precision == "bfloat16":
            return cls(torch.float32, autocast=True, channels_last=True)
        return cls(torch.float32, autocast=False, channels_last=False)

    def inputs(self, x: Tensor) -> Tensor:
        """A batch as the forward pass takes it (channels-last for N×C×H×W images under ``bfloat16``)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    @contextlib.contextmanager
    def forward(self, device: torch.device) -> Iterator[None]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
            yield

    def logits(self, logits: Tensor) -> Tensor:
        """Logits as the loss takes them: float32 after a bf16 forward pass, else as they are."""
        return logits.float() if self.autocast else logits


# --- Cells ------------------------------------------------------------------------------------------------------
class Cells(ABC):
    """K cells' networks as one model the loop trains: ``forward`` maps one shared batch to K×B×classes logits,
    and ``optimizer`` steps every cell with its own α and λ."""

    k: int
    optimizer: torch.optim.Optimizer

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def train(self, mode: bool) -> None:
        """Training mode (BatchNorm uses batch statistics) or evaluation mode."""

    @abstractmethod
    def weights(self) -> dict[str, Any]:
        """The live weights (and buffers) as tensors: what a checkpoint saves."""

    @abstractmethod
    def load_weights(self, state: Mapping[str, Any]) -> None: ...


class OneCell(Cells):
    """One cell's own ``nn.Module`` (K = 1)."""

    def __init__(self, config: TrainingConfig, data: Data, device: torch.device, policy: PrecisionPolicy):
        self.k = 1
        torch.manual_seed(config.seed)  # initialization
        self.model = build_model(config.model, data.input_shape, data.n_classes, **config.model_args)
        self.model = self.model.to(device=device, dtype=policy.dtype)
        self.optimizer = make_optimizer(
            config.optimizer, self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).unsqueeze(0)

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def weights(self) -> dict[str, Any]:
        return dict(self.model.state_dict())

    def load_weights(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state)


# --- The loop ---------------------------------------------------------------------------------------------------
def cross_entropies(logits: Tensor, y: Tensor, k: int, reduction: Literal["mean", "sum"]) -> Tensor:
    """Each cell's cross-entropy over the batch, shape (K,): K×B×classes logits, B labels."""
    # The classes as dimension 1 (cross_entropy's K×classes×B form): the log-softmax then runs across the batch, in
    # whole vectors, instead of along rows of a few classes: forward and backward 0.13 against 0.53 ms for 16 cells
    # of 128 examples and 10 classes, 0.08 against 0.12 for one cell (one thread).
    losses = nn.functional.cross_entropy(logits.transpose(1, 2), y.expand(k, -1), reduction="none")  # K×B
    return losses.mean(dim=1) if reduction == "mean" else losses.double().sum(dim=1)


def _evaluate(cells: Cells, data: Data, policy: PrecisionPolicy) -> tuple[Tensor, Tensor]:
    """Per-cell (sum of test cross-entropy, wrong top-1 predictions) as device tensors of shape (K,)."""
    loss_sum = torch.zeros(cells.k, device=data.device, dtype=torch.float64)
    wrong = torch.zeros(cells.k, device=data.device, dtype=torch.long)
    with torch.no_grad():
        for x_batch, y in data.test_batches(EVAL_BATCH, policy.dtype):
            x = policy.inputs(x_batch)
            with policy.forward(data.device):
                logits = policy.logits(cells.forward(x))
            loss_sum += cross_entropies(logits, y, cells.k, "sum")
            wrong += (logits.argmax(2) != y).sum(dim=1)
    return loss_sum, wrong


def train_cells(
    configs: Sequence[TrainingConfig],
    cells: Cells,
    data: Data,
    device: torch.device,
    on_epoch: Callable[[int, EpochMetrics], None] | None = None,
    *,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    time_limit_s: float | None = None,
) -> list[CellResult]:
    """Train ``cells`` (built for ``configs``, which differ only in α and λ) to the end; one result per config.

    ``on_epoch(i, metrics)`` gets cell i's metrics after every epoch it survives; ``on_checkpoint(state)`` the
    whole state at every epoch boundary (live tensors: serialize it during the call); ``resume`` is such a state.
    ``time_limit_s``: seconds of training (resumes included) after which the cells still training end as
    ``timed_out``, checked before every step.
    """
    cfg, k = configs[0], cells.k
    policy = PrecisionPolicy.of(cfg.precision)
    schedule = build_schedule(cfg, data.n_train)
    generator = torch.Generator().manual_seed(cfg.seed)  # batch order and augmentation

    histories: list[list[EpochMetrics]] = [[] for _ in configs]
    status: list[RunStatus] = ["completed"] * k
    diverged_at: list[int | None] = [None] * k
    alive = torch.ones(k, dtype=torch.bool, device=device)
    start_epoch, step, wall_before = 0, 0, 0.0
    if resume is not None:
        with torch.no_grad():
            cells.load_weights(resume["weights"])
        cells.optimizer.load_state_dict(resume["optimizer"])
        _set_rng_state(resume["rng"], generator, device)
        start_epoch, step, wall_before = int(resume["epoch"]), int(resume["step"]), float(resume["wall_time_s"])
        histories = [[EpochMetrics(**m) for m in h] for h in resume["histories"]]
        status, diverged_at = list(resume["status"]), list(resume["diverged_at"])
        alive.copy_(torch.as_tensor(resume["alive"], dtype=torch.bool))

    def diverge(which: Tensor, epoch: int) -> None:
        for i in torch.nonzero(which).flatten().tolist():
            if status[i] == "completed":
                status[i], diverged_at[i] = "diverged", epoch
        alive.logical_and_(~which)

    started = time.perf_counter()
    deadline = math.inf if time_limit_s is None else started + time_limit_s - wall_before
    check_each_step = device.type == "cpu"  # a host sync per step costs nothing on CPU; on GPU check per epoch
    if device.type == "cpu":
        keep_freed_memory()
    n_seen = min(data.n_train, steps_per_epoch(data.n_train, cfg.batch_size) * cfg.batch_size)
    TrainingDeadline.set(deadline)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            cells.train(True)
            loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
            wrong = torch.zeros(k, device=device, dtype=torch.long)
            eta = 1.0
            for x, y in data.batches(cfg.batch_size, generator, policy.dtype):
                if time.perf_counter() > deadline:
                    raise TimeLimitExceeded
                with policy.forward(device):
                    logits = policy.logits(cells.forward(policy.inputs(x)))  # K×B×classes
                losses = cross_entropies(logits, y, k, "mean")
                if check_each_step and not bool(torch.isfinite(losses)[alive].all()):
                    diverge(~torch.isfinite(losses) & alive, epoch + 1)
                    if not bool(alive.any()):
                        break
                # Sum of per-cell means: every cell gets exactly its own gradient; diverged cells contribute nothing.
                total = torch.where(alive, losses, torch.zeros_like(losses)).sum()
                cells.optimizer.zero_grad(set_to_none=True)
                total.backward()
                eta = schedule.multiplier(step)
                set_eta(cells.optimizer, eta)
                cells.optimizer.step()
                step += 1
                loss_sum += losses.detach().double() * y.shape[0]
                wrong += (logits.detach().argmax(2) != y).sum(dim=1)
            if not bool(alive.any()):
                break

            cells.train(False)
            test_loss_sum, test_wrong = _evaluate(cells, data, policy)
            # One host sync per epoch: everything above stayed on the device.
            train_loss = (loss_sum / n_seen).tolist()
            test_loss = (test_loss_sum / data.n_test).tolist()
            train_err = (100.0 * wrong.double() / n_seen).tolist()
            test_err = (100.0 * test_wrong.double() / data.n_test).tolist()
            wall = wall_before + time.perf_counter() - started
            for i in range(k):
                if status[i] != "completed":
                    continue
                if not (math.isfinite(train_loss[i]) and math.isfinite(test_loss[i])):
                    diverge(torch.arange(k, device=device) == i, epoch + 1)
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
                        "weights": cells.weights(),
                        "optimizer": cells.optimizer.state_dict(),
                        "rng": _rng_state(generator, device),
                        "histories": [[asdict(m) for m in h] for h in histories],
                        "status": list(status),
                        "diverged_at": list(diverged_at),
                        "alive": alive.tolist(),
                        "wall_time_s": wall,
                    }
                )
            if not bool(alive.any()):
                break
    except StopTraining as stop:
        end: RunStatus = "timed_out" if isinstance(stop, TimeLimitExceeded) else "stopped"
        status = [end if s == "completed" else s for s in status]
    finally:
        TrainingDeadline.clear()

    wall = wall_before + time.perf_counter() - started
    error = None if time_limit_s is None else time_limit_error(time_limit_s)
    return [
        CellResult(
            c,
            status[i],
            histories[i],
            str(device),
            wall,
            diverged_at_epoch=diverged_at[i],
            error=error if status[i] == "timed_out" else None,
        )
        for i, c in enumerate(configs)
    ]


# --- One cell ---------------------------------------------------------------------------------------------------
def train(
    config: TrainingConfig | Mapping[str, Any],
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    *,
    device: str | torch.device = "auto",
    data_dir: str | Path | None = None,
    data: Data | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    time_limit_s: float | None = None,
) -> CellResult:
    """Train one cell and return its result: with wdgrid's loop, or with the config's trainer plugin
    (:mod:`workers.trainer`), which owns its loop and reports through a context.

    Args:
        config: a :class:`~sweeps.TrainingConfig` or plain data of one (``TrainingConfig.as_dict``).
        on_epoch: called with each epoch's :class:`EpochMetrics` as soon as they are measured.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``: where, not what.
        data_dir: where data sets live (None: ``workers.data.DEFAULT_DATA_DIR``).
        data: the data set already on the device (a bundle shares one); loaded when ``None``.
        on_checkpoint: called at every epoch boundary with the whole training state (a dict of tensors and numbers
            that ``torch.save`` can write); pass it back as ``resume`` to continue from there.
        resume: a state from ``on_checkpoint``; training continues after its epoch.
        time_limit_s: seconds of training (resumes included) after which the cell ends as ``timed_out``.
    """
    cfg = config if isinstance(config, TrainingConfig) else TrainingConfig.from_dict(config)
    where = resolve_device(device)
    if cfg.trainer is not None:
        return run_trainer(
            cfg,
            on_epoch,
            device=where,
            data_dir=data_dir,
            data=data,
            on_checkpoint=on_checkpoint,
            resume=resume,
            time_limit_s=time_limit_s,
        )
    data = data if data is not None else load_data(cfg, where, data_dir)
    cells = OneCell(cfg, data, where, PrecisionPolicy.of(cfg.precision))
    forward = None if on_epoch is None else (lambda _i, m: on_epoch(m))
    [result] = train_cells(
        [cfg], cells, data, where, forward, on_checkpoint=on_checkpoint, resume=resume, time_limit_s=time_limit_s
    )
    return result
