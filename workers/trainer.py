"""Trainer plugins: a cell whose spec names a ``trainer`` runs that plugin's own loop, for anything that is not a
classifier trained on cross-entropy (a language model, a contrastive objective, a custom data pipeline).

A trainer is an installed ``wdgrid.trainers`` entry point, a function ``train(config, ctx) -> None``:

- ``config`` is the cell's :class:`~sweeps.TrainingConfig` (α = ``config.lr``, λ = ``config.weight_decay`` raw per
  step, ``config.epochs``, ``config.batch_size``, ``config.seed``, ``config.trainer_args``, ...);
- ``ctx`` is a :class:`TrainerContext`. Build the optimizer with ``ctx.make_optimizer(params)`` (the paper's exact
  optimizer with the cell's α and λ, so they keep their meaning), call ``ctx.set_eta(optimizer, step,
  steps_per_epoch)`` before every ``optimizer.step()`` (η_t from the sweep's schedule), and end every epoch with
  ``ctx.report({"val_loss": ..., ...})``. ``ctx.data()`` and ``ctx.model(...)`` give the spec's data set and model
  plugins, loaded and seeded the way wdgrid's own loop does.
- Checkpoints are the trainer's choice: ``ctx.checkpoint(state)`` after a report hands wdgrid anything
  ``torch.save`` can write (weights, optimizer, RNG states); when a crashed cell is retried, ``ctx.resume_state`` is
  the last such state and ``ctx.epoch`` the epochs it covers. A trainer that never checkpoints starts over when its
  cell is retried (its earlier epochs are reported again by the new attempt). A cell's time limit is checked in every
``set_eta`` and ``report``: past it, they raise and the cell ends ``timed_out``.

What a report means: one epoch, in order, at most ``config.epochs`` of them, at most :data:`MAX_METRICS` metrics
named like identifiers. ``train_loss``, ``train_error``, ``test_loss`` and ``test_error`` fill the columns of wdgrid's
own loop (errors in percent by convention); every other name is stored beside them (``epochs.csv``). A non-finite
value in a report means the cell **diverged**: the report raises, the trainer's loop ends there, and the cell is a
diverged result, as with wdgrid's own loop (its history ends with the last finite epoch). A trainer that raises
anything else fails its cell with that error; the driver retries it like any crashed cell.

Declare the metrics a trainer reports as ``METRICS = ("val_loss", ...)`` on the function, and its arguments as a
pydantic model ``Args``: a spec whose objective names another metric, or whose ``trainer_args`` do not fit, is
refused at submission.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from sweeps import TrainingConfig, load_plugin
from workers.data import Data
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
    load_data,
    time_limit_error,
)
from workers.schedules import Schedule

__all__ = ["MAX_METRICS", "SharedData", "TrainerContext", "TrainerError", "run_trainer"]

MAX_METRICS: Final = 64  # metrics in one report
BUILT_IN: Final = ("train_loss", "train_error", "test_loss", "test_error")
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class TrainerError(ValueError):
    """A trainer used its context wrongly (a report that is not one epoch of named numbers, too many epochs)."""


class _Diverged(StopTraining):
    """Raised by :meth:`TrainerContext.report` at a non-finite value: it ends the trainer's loop."""


class SharedData:
    """A data set loaded at most once, when a trainer first asks for it, and shared by the cells of a bundle."""

    def __init__(self, data: Data | None = None) -> None:
        self._data = data

    def get(self, config: TrainingConfig, device: torch.device, data_dir: str | Path | None) -> Data:
        if self._data is None:
            self._data = load_data(config, device, data_dir)
        return self._data


class TrainerContext:
    """What a trainer plugin gets besides its config: the device, the sweep's data set and model, the paper's
    optimizer, the schedule's η_t, and where to report and checkpoint. See the module docstring."""

    def __init__(
        self,
        config: TrainingConfig,
        device: torch.device,
        data_dir: str | Path | None,
        data: SharedData,
        on_epoch: Callable[[EpochMetrics], None] | None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None,
        resume: Mapping[str, Any] | None,
        time_limit_s: float | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.data_dir = None if data_dir is None else Path(data_dir)
        self._data = data
        self._on_epoch = on_epoch
        self._on_checkpoint = on_checkpoint
        self._schedules: dict[int, Schedule] = {}
        self._eta = 1.0
        self.history: list[EpochMetrics] = []
        self._wall_before = 0.0
        self.resume_state: Any = None
        """The state last passed to :meth:`checkpoint` before this cell's attempt was interrupted, or None."""
        if resume is not None:
            self.history = [EpochMetrics(**m) for m in resume["histories"][0]]
            self._wall_before = float(resume["wall_time_s"])
            self.resume_state = resume["trainer_state"]
        self._started = time.perf_counter()
        self._deadline = math.inf if time_limit_s is None else self._started + time_limit_s - self._wall_before

    def _in_time(self) -> None:
        if time.perf_counter() > self._deadline:
            raise TimeLimitExceeded

    @property
    def epoch(self) -> int:
        """Epochs reported so far (after a resume: the epochs the checkpoint covers)."""
        return len(self.history)

    @property
    def args(self) -> Mapping[str, Any]:
        """The spec's ``trainer_args`` (already checked against the trainer's ``Args``, if it declares one)."""
        return self.config.trainer_args

    def data(self) -> Data:
        """The spec's data set (``dataset``, ``dataset_args``) on the device: whole (``DeviceData``) or streamed
        (``StreamedData``), loaded once per bundle."""
        return self._data.get(self.config, self.device, self.data_dir)

    def model(self, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        """The spec's model (``model``, ``model_args``) on the device, initialized from the cell's seed like
        wdgrid's own loop does."""
        torch.manual_seed(self.config.seed)
        return build_model(self.config.model, input_shape, n_classes, **self.config.model_args).to(self.device)

    def make_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The cell's optimizer (``sgd``, ``sgdw``, ``adam`` or ``adamw``, the paper's exact algorithms) over
        ``params`` (parameters, or param groups) with α = ``config.lr`` and λ = ``config.weight_decay``, raw per
        step."""
        return make_optimizer(self.config.optimizer, params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def set_eta(self, optimizer: torch.optim.Optimizer, step: int, steps_per_epoch: int) -> float:
        """Set η_t of the sweep's schedule at ``step`` (0-based, counted over the whole run) for a loop of
        ``steps_per_epoch`` optimizer steps per epoch; call it before every ``optimizer.step()``. Returns η_t.
        Raises (ending the trainer's loop) when the cell's time limit has passed."""
        self._in_time()
        if steps_per_epoch < 1 or step < 0:
            raise TrainerError(f"set_eta needs step >= 0 and steps_per_epoch >= 1, got {step} and {steps_per_epoch}")
        if steps_per_epoch not in self._schedules:
            self._schedules[steps_per_epoch] = build_schedule(self.config, 0, per_epoch=steps_per_epoch)
        self._eta = self._schedules[steps_per_epoch].multiplier(step)
        set_eta(optimizer, self._eta)
        return self._eta

    def report(self, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """End one epoch with its metrics (names → numbers, or one-element tensors). Raises (ending the trainer's
        loop) when a value is not finite — the cell diverged — or when the cell's time limit has passed."""
        self._in_time()
        if self.epoch >= self.config.epochs:
            raise TrainerError(f"the trainer reported more than the cell's {self.config.epochs} epochs")
        if not metrics or len(metrics) > MAX_METRICS:
            raise TrainerError(f"a report holds 1 to {MAX_METRICS} metrics, got {len(metrics)}")
        values: dict[str, float] = {}
        for name, value in metrics.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise TrainerError(f"metric names are identifiers of at most 64 characters, got {name!r}")
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TrainerError(f"metric {name!r} must be a number, got {type(value).__name__}")
            values[name] = float(value)
        bad = sorted(name for name, value in values.items() if not math.isfinite(value))
        if bad:
            raise _Diverged(f"epoch {self.epoch + 1}: {', '.join(bad)} not finite")
        wall = self._wall_before + time.perf_counter() - self._started
        train_loss, train_error, test_loss, test_error = (values.pop(name, math.nan) for name in BUILT_IN)
        m = EpochMetrics(self.epoch + 1, train_loss, train_error, test_loss, test_error, self._eta, wall, values)
        self.history.append(m)
        if self._on_epoch is not None:
            self._on_epoch(m)

    def checkpoint(self, state: Any) -> None:
        """Keep ``state`` (anything ``torch.save`` writes) as the trainer's state after the last reported epoch;
        a retried attempt of this cell gets it back as ``ctx.resume_state``. Serialized during the call."""
        if self._on_checkpoint is not None:
            self._on_checkpoint(
                {
                    "epoch": self.epoch,
                    "histories": [[asdict(m) for m in self.history]],
                    "trainer_state": state,
                    "wall_time_s": self._wall_before + time.perf_counter() - self._started,
                }
            )


def run_trainer(
    config: TrainingConfig,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    *,
    device: torch.device,
    data_dir: str | Path | None = None,
    data: Data | SharedData | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    time_limit_s: float | None = None,
) -> CellResult:
    """Run the config's trainer plugin on one cell; the result is built from what it reported. ``on_epoch``,
    ``on_checkpoint``, ``resume`` and ``time_limit_s`` mean what they mean for :func:`workers.train.train`."""
    if config.trainer is None:
        raise ValueError("the config names no trainer")
    trainer = load_plugin("trainer", config.trainer)
    shared = data if isinstance(data, SharedData) else SharedData(data)
    ctx = TrainerContext(config, device, data_dir, shared, on_epoch, on_checkpoint, resume, time_limit_s)
    status: RunStatus = "completed"
    diverged_at, error = None, None
    TrainingDeadline.set(ctx._deadline)
    try:
        trainer(config, ctx)
    except _Diverged:
        status, diverged_at = "diverged", ctx.epoch + 1
    except TimeLimitExceeded:
        status, error = "timed_out", time_limit_error(time_limit_s or 0.0)
    except StopTraining:
        status = "stopped"
    finally:
        TrainingDeadline.clear()
    if status == "completed" and ctx.epoch < config.epochs:
        raise TrainerError(
            f"trainer {config.trainer!r} returned after {ctx.epoch} of {config.epochs} epochs: report every epoch"
        )
    wall = ctx._wall_before + time.perf_counter() - ctx._started
    return CellResult(config, status, list(ctx.history), str(device), wall, diverged_at_epoch=diverged_at, error=error)
