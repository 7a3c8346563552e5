"""Train one grid cell: ``train(config) -> TrialResult``. Runs without Ray, FastAPI or a database.

Reads top to bottom: Config / Results / Setup / Epoch loop. The data set lives whole on the training device
(``workers.data``); each step gathers a batch by index, augments it on the device, and takes one step of the paper's
optimizer with η_t from the schedule. After every epoch the loop measures train loss and error (over the epoch's
batches, as trained), test loss and top-1 test error (percent, the paper's metric), η_t and wall time, and hands them
to ``on_epoch``. A non-finite loss ends the run at once with status ``diverged``: a result, not a failure.

Determinism: the seed fixes the initialization (torch's global RNG), the batch order and the augmentation (a CPU
generator of their own); on CPU two runs with the same config give identical numbers. At epoch boundaries the whole
state (model, optimizer, epoch and step, RNG states, history) goes to ``on_checkpoint``; ``train(..., resume=state)``
continues from it and ends with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from workers.data import DeviceData, load_dataset
from workers.models import build_model
from workers.optimizers import OPTIMIZERS, make_optimizer, set_eta
from workers.schedules import Schedule, make_schedule

__all__ = [
    "EpochMetrics",
    "StopTraining",
    "TrainConfig",
    "TrialResult",
    "resolve_device",
    "train",
]

TrialStatus = Literal["completed", "diverged", "stopped"]
EVAL_BATCH = 1024  # test examples per forward pass when measuring


# --- Config -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """One cell's training run.

    Attributes:
        dataset, model: registry names (``workers.data.DATASETS``, ``workers.models.MODELS``).
        optimizer: ``sgd``, ``sgdw``, ``adam`` or ``adamw``.
        lr: α, the base learning rate.
        weight_decay: λ, raw, per optimizer step (already converted from λ_norm where the sweep used it).
        epochs: passes over the training set.
        batch_size: examples per optimizer step.
        seed: initialization, batch order and augmentation.
        schedule: ``{"name": fixed|step|cosine|warm_restarts, ...its arguments in epochs}``.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32`` (default) or ``float64`` (exactness checks).
        data_dir: where data sets live; ``None`` means ``WDGRID_DATA_DIR`` or the user cache.
    """

    dataset: str
    model: str
    optimizer: str
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    seed: int = 0
    schedule: Mapping[str, Any] = field(default_factory=lambda: {"name": "cosine"})
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if "name" not in self.schedule:
            raise ValueError("schedule must name its kind: {'name': 'cosine', ...}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain mapping (what a sweep's cell expands to); unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**config)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schedule"] = dict(self.schedule)
        return d


class StopTraining(Exception):
    """Raise from ``on_epoch`` or ``on_checkpoint`` to end the run cleanly; it returns with status ``stopped``."""


# --- Results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochMetrics:
    """Measured after one epoch. Errors are top-1 in percent; losses are mean cross-entropy; ``eta`` is η_t of the
    epoch's last step; ``wall_time_s`` is seconds of training since the run started (resumes included)."""

    epoch: int  # 1-based
    train_loss: float
    train_error: float
    test_loss: float
    test_error: float
    eta: float
    wall_time_s: float


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one cell. ``status`` is ``completed``, ``diverged`` (a non-finite loss; ``history`` ends with
    the last epoch measured before it) or ``stopped`` (a callback raised :class:`StopTraining`)."""

    config: TrainConfig
    status: TrialStatus
    history: list[EpochMetrics]
    device: str
    wall_time_s: float  # seconds, whole run
    diverged_at_epoch: int | None = None

    @property
    def final(self) -> EpochMetrics | None:
        return self.history[-1] if self.history else None

    @property
    def test_error(self) -> float:
        """Final top-1 test error in percent (NaN when no epoch was measured)."""
        return self.history[-1].test_error if self.history else math.nan


# --- Setup ------------------------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches per epoch: the last partial batch is kept unless it would hold a single example (which BatchNorm
    cannot normalize in training mode)."""
    return n_train // batch_size + (1 if n_train % batch_size > 1 else 0)


def epoch_batches(n_train: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[Tensor]:
    """A fresh random order of the training set, split into batches of indices on ``device``."""
    order = torch.randperm(n_train, generator=generator).to(device)
    return list(order.split(batch_size))[: steps_per_epoch(n_train, batch_size)]


def build_schedule(config: TrainConfig, n_train: int) -> Schedule:
    params: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in config.schedule.items() if k != "name"
    }
    return make_schedule(
        str(config.schedule["name"]),
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch(n_train, config.batch_size),
        **params,
    )


def evaluate(model: Callable[[Tensor], Tensor], data: DeviceData, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(sum of test cross-entropy, number of wrong top-1 predictions) as device tensors, in eval mode."""
    loss_sum = torch.zeros((), device=data.device, dtype=torch.float64)
    wrong = torch.zeros((), device=data.device, dtype=torch.long)
    x_all = data.test_inputs(dtype)
    with torch.no_grad():
        for start in range(0, x_all.shape[0], EVAL_BATCH):
            x, y = x_all[start : start + EVAL_BATCH], data.y_test[start : start + EVAL_BATCH]
            logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
            wrong += (logits.argmax(1) != y).sum()
    return loss_sum, wrong


def load_data(config: TrainConfig, device: torch.device) -> DeviceData:
    return load_dataset(config.dataset, Path(config.data_dir) if config.data_dir else None).to(device)


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


# --- Epoch loop -------------------------------------------------------------------------------------------------
def train(
    config: TrainConfig | Mapping[str, Any],
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    *,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    data: DeviceData | None = None,
) -> TrialResult:
    """Train one cell and return its result.

    Args:
        config: a :class:`TrainConfig` or a mapping with its fields.
        on_epoch: called with each epoch's :class:`EpochMetrics` as soon as they are measured.
        on_checkpoint: called at every epoch boundary with the whole training state (a dict of tensors and numbers
            that ``torch.save`` can write); pass it back as ``resume`` to continue from there.
        resume: a state from ``on_checkpoint``; training continues after its epoch.
        data: the data set already on the device (a bundle shares one); loaded from the registry when ``None``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    device = resolve_device(cfg.device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    data = data if data is not None else load_data(cfg, device)

    torch.manual_seed(cfg.seed)  # initialization
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device=device, dtype=dtype)
    images = len(data.input_shape) == 3
    if device.type == "cuda" and images:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = build_schedule(cfg, data.n_train)
    generator = torch.Generator().manual_seed(cfg.seed)  # batch order and augmentation
    # bf16 autocast pays on CUDA for conv nets; on CPU, and for exactness runs, everything stays in `dtype`.
    amp = device.type == "cuda" and dtype == torch.float32 and images

    history: list[EpochMetrics] = []
    start_epoch, step, wall_before = 0, 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        _set_rng_state(resume["rng"], generator, device)
        start_epoch, step, wall_before = int(resume["epoch"]), int(resume["step"]), float(resume["wall_time_s"])
        history = [EpochMetrics(**m) for m in resume["history"]]

    started = time.perf_counter()
    status: TrialStatus = "completed"
    diverged_at: int | None = None
    check_each_step = device.type == "cpu"  # a host sync per step costs nothing on CPU; on GPU check per epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            wrong = torch.zeros((), device=device, dtype=torch.long)
            eta = 1.0
            for idx in epoch_batches(data.n_train, cfg.batch_size, generator, device):
                x, y = data.train_batch(idx, generator, dtype)
                if device.type == "cuda" and images:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                loss = nn.functional.cross_entropy(logits.float() if amp else logits, y)
                if check_each_step and not torch.isfinite(loss):
                    raise _Diverged(epoch + 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                eta = schedule.multiplier(step)
                set_eta(optimizer, eta)
                optimizer.step()
                step += 1
                loss_sum += loss.detach().double() * y.shape[0]
                wrong += (logits.detach().argmax(1) != y).sum()
            n_seen = min(data.n_train, steps_per_epoch(data.n_train, cfg.batch_size) * cfg.batch_size)
            model.eval()
            test_loss_sum, test_wrong = evaluate(model, data, dtype)
            # One host sync per epoch: everything above stayed on the device.
            train_loss, test_loss = loss_sum.item() / n_seen, test_loss_sum.item() / data.y_test.shape[0]
            if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                raise _Diverged(epoch + 1)
            metrics = EpochMetrics(
                epoch=epoch + 1,
                train_loss=train_loss,
                train_error=100.0 * wrong.item() / n_seen,
                test_loss=test_loss,
                test_error=100.0 * test_wrong.item() / data.y_test.shape[0],
                eta=eta,
                wall_time_s=wall_before + time.perf_counter() - started,
            )
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(metrics)
            if on_checkpoint is not None:
                on_checkpoint(
                    {
                        "epoch": epoch + 1,
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": _rng_state(generator, device),
                        "history": [asdict(m) for m in history],
                        "wall_time_s": metrics.wall_time_s,
                    }
                )
    except _Diverged as exc:
        status, diverged_at = "diverged", exc.epoch
    except StopTraining:
        status = "stopped"
    return TrialResult(
        config=cfg,
        status=status,
        history=history,
        device=str(device),
        wall_time_s=wall_before + time.perf_counter() - started,
        diverged_at_epoch=diverged_at,
    )


class _Diverged(Exception):
    def __init__(self, epoch: int) -> None:
        super().__init__(f"non-finite loss in epoch {epoch}")
        self.epoch = epoch
