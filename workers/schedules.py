"""Schedule multipliers η_t: the factor the paper's optimizers apply to the learning rate α (and, for SGDW/AdamW, to λ).

A schedule maps the optimizer step — 0-based, counted in batches since the start of training — to η_t ∈ [0, 1].
Every schedule is defined on *fractional epochs* ``t = step / steps_per_epoch``, so η_t changes every batch where
the schedule is continuous (cosine, warm restarts), and all arguments that name a time are in **epochs**
(fractions allowed). The training loop calls ``schedule.multiplier(step)`` before each optimizer step and passes
the value to ``workers.optimizers.set_eta``.

- ``fixed``: η_t = 1.
- ``step``: η_t = factor^k, k = the number of drop epochs ≤ t. The paper's Figure 1 drops at epochs 30, 60 and 80 of
  100; the default drops at 30 %, 60 % and 80 % of the run, and the factor defaults to 0.1 (fb.resnet.torch's; the
  paper does not state it).
- ``cosine``: η_t = 0.5 + 0.5·cos(π·t / T), T = the run's epochs (Loshchilov & Hutter's cosine annealing).
- ``warm_restarts``: SGDR. Period i lasts T_i = T_0·T_mult^i epochs; within it η_t = 0.5 + 0.5·cos(π·T_cur / T_i),
  T_cur = epochs since the last restart, fractional and updated every batch; η_t jumps back to 1 at each restart.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "SCHEDULES",
    "ConstantSchedule",
    "CosineSchedule",
    "Schedule",
    "ScheduleName",
    "StepSchedule",
    "WarmRestartsSchedule",
    "make_schedule",
]

ScheduleName = Literal["fixed", "step", "cosine", "warm_restarts"]
SCHEDULES: Final[tuple[ScheduleName, ...]] = ("fixed", "step", "cosine", "warm_restarts")

# The paper's step-drop points (Figure 1: epochs 30, 60, 80 of 100), as fractions of the run.
DEFAULT_DROP_FRACTIONS: Final[tuple[float, ...]] = (0.3, 0.6, 0.8)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Schedule(ABC):
    """η_t per optimizer step.

    Attributes:
        epochs: T, the length of the run in epochs.
        steps_per_epoch: optimizer steps (batches) per epoch.
    """

    epochs: float
    steps_per_epoch: int

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        if isinstance(self.steps_per_epoch, bool) or not isinstance(self.steps_per_epoch, int):
            raise ValueError(f"steps_per_epoch must be an integer, got {self.steps_per_epoch!r}")
        _positive("steps_per_epoch", self.steps_per_epoch)

    def multiplier(self, step: int) -> float:
        """η_t for the 0-based optimizer ``step`` (batches since the start of training)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.at_epoch(step / self.steps_per_epoch)

    @abstractmethod
    def at_epoch(self, t: float) -> float:
        """η_t at ``t`` fractional epochs since the start of training."""


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """``fixed``: η_t = 1 throughout."""

    def at_epoch(self, t: float) -> float:
        return 1.0


@dataclass(frozen=True)
class StepSchedule(Schedule):
    """``step``: η_t = ``factor`` ** (number of ``drop_epochs`` ≤ t).

    Attributes:
        drop_epochs: the epochs (fractions allowed) at which η drops; ``None`` means 30 %, 60 % and 80 % of
            ``epochs`` — the paper's 30/60/80 of 100, scaled to the run. A drop takes effect at the first step whose
            epoch t is at or past it, so integer drop epochs drop at epoch boundaries.
        factor: the multiplier applied at each drop, in (0, 1].
    """

    drop_epochs: tuple[float, ...] | None = None
    factor: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.drop_epochs is None:
            object.__setattr__(self, "drop_epochs", tuple(f * self.epochs for f in DEFAULT_DROP_FRACTIONS))
        else:
            drops = tuple(_positive("drop_epochs", d) for d in self.drop_epochs)
            object.__setattr__(self, "drop_epochs", tuple(sorted(drops)))
        if _positive("factor", self.factor) > 1:
            raise ValueError(f"factor must be <= 1, got {self.factor!r}")

    def at_epoch(self, t: float) -> float:
        assert self.drop_epochs is not None  # set in __post_init__
        return float(self.factor ** sum(1 for d in self.drop_epochs if t >= d))


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """``cosine``: η_t = 0.5 + 0.5·cos(π·t / T), from 1 at the first step towards 0 at t = T (clamped there)."""

    def at_epoch(self, t: float) -> float:
        return 0.5 + 0.5 * math.cos(math.pi * min(t, self.epochs) / self.epochs)


@dataclass(frozen=True)
class WarmRestartsSchedule(Schedule):
    """``warm_restarts`` (SGDR): cosine annealing restarted after T_0, then T_0·T_mult, T_0·T_mult², … epochs.

    Attributes:
        t_0: T_0, the length of the first period in epochs (fractions allowed).
        t_mult: T_mult ≥ 1, the factor by which each period is longer than the one before.
    """

    t_0: float = 10.0
    t_mult: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("t_0", self.t_0)
        if _positive("t_mult", self.t_mult) < 1:
            raise ValueError(f"t_mult must be >= 1, got {self.t_mult!r}")

    def period(self, t: float) -> tuple[float, float]:
        """(start, length) in epochs of the restart period that contains epoch ``t``."""
        if self.t_mult == 1:
            i = math.floor(t / self.t_0)
            return i * self.t_0, self.t_0
        # Periods grow geometrically, so this loop runs O(log t) times.
        start, length = 0.0, self.t_0
        while t >= start + length:
            start += length
            length *= self.t_mult
        return start, length

    def restart_epochs(self) -> list[float]:
        """Epochs in (0, T) at which η_t jumps back to 1."""
        starts: list[float] = []
        start, length = self.t_0, self.t_0
        while start < self.epochs:
            starts.append(start)
            length *= self.t_mult
            start += length
        return starts

    def at_epoch(self, t: float) -> float:
        start, length = self.period(t)
        return 0.5 + 0.5 * math.cos(math.pi * (t - start) / length)


def make_schedule(
    name: str,
    *,
    epochs: float,
    steps_per_epoch: int,
    drop_epochs: tuple[float, ...] | None = None,
    factor: float = 0.1,
    t_0: float = 10.0,
    t_mult: float = 2.0,
) -> Schedule:
    """Build a schedule by name; ``drop_epochs``/``factor`` apply to ``step``, ``t_0``/``t_mult`` to
    ``warm_restarts`` (all times in epochs). Raises ``ValueError`` naming the argument that is out of range."""
    if name == "fixed":
        return ConstantSchedule(epochs, steps_per_epoch)
    if name == "step":
        return StepSchedule(epochs, steps_per_epoch, drop_epochs=drop_epochs, factor=factor)
    if name == "cosine":
        return CosineSchedule(epochs, steps_per_epoch)
    if name == "warm_restarts":
        return WarmRestartsSchedule(epochs, steps_per_epoch, t_0=t_0, t_mult=t_mult)
    raise ValueError(f"name must be one of {', '.join(SCHEDULES)}; got {name!r}")
