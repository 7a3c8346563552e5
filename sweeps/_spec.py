"""The sweep spec: a validated, frozen description of an (α, λ) grid search, its canonical form and fingerprint.

Units, everywhere in this module:

- α (``lr``) is the base learning rate; the training loop multiplies it by the schedule's η_t.
- λ (``weight_decay``) is what the spec gives: raw and per optimizer step when ``weight_decay_units`` is ``"raw"``,
  the paper's normalized λ_norm (Appendix B.1) when it is ``"normalized"``. :meth:`SweepSpec.raw_weight_decay`
  converts: λ = λ_norm·√(b / (B·T)), b = ``batch_size``, B = :data:`N_TRAIN` of the data set, T = ``epochs`` — or,
  with warm restarts, T = ``t_0``, the first restart period (one raw λ per run; later, longer periods keep it).
- Every time (``epochs``, ``drop_epochs``, ``t_0``) is in epochs, as in ``workers.schedules``.

Limits: a sweep may hold at most ``max_cells`` cells (default 5000) and ``max_epochs`` epochs (default 2000). Each is
read, in this order, from the validation context (``SweepSpec.model_validate(data, context={"max_cells": n})``),
from the environment (``WDGRID_MAX_CELLS``, ``WDGRID_MAX_EPOCHS``) at validation time, or from the defaults
:data:`DEFAULT_MAX_CELLS` / :data:`DEFAULT_MAX_EPOCHS`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from fractions import Fraction
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_CELLS",
    "DEFAULT_MAX_EPOCHS",
    "MODELS",
    "N_TRAIN",
    "OPTIMIZERS",
    "Axis",
    "CosineSchedule",
    "DatasetName",
    "FixedSchedule",
    "Grid",
    "LogRange",
    "ModelName",
    "OptimizerName",
    "Schedule",
    "StepSchedule",
    "SweepSpec",
    "WarmRestartsSchedule",
    "canonical_json",
    "expand_axis",
]

# The registries' names. workers/data.py and workers/models.py hold the implementations; sweeps may not import them
# (data flows sweeps -> workers), so the names a spec may use are fixed here, and a spec can never name a Python
# path, a file or a command.
DatasetName = Literal["mnist1d", "digits", "cifar10", "cifar100", "imagenet32"]
ModelName = Literal["mlp", "cnn1d", "digits_cnn", "resnet20", "shake_shake_26_2x64d", "shake_shake_26_2x96d"]
OptimizerName = Literal["sgd", "sgdw", "adam", "adamw"]
DATASETS: Final[tuple[DatasetName, ...]] = ("mnist1d", "digits", "cifar10", "cifar100", "imagenet32")
MODELS: Final[tuple[ModelName, ...]] = (
    "mlp",
    "cnn1d",
    "digits_cnn",
    "resnet20",
    "shake_shake_26_2x64d",
    "shake_shake_26_2x96d",
)
OPTIMIZERS: Final[tuple[OptimizerName, ...]] = ("sgd", "sgdw", "adam", "adamw")

# B, the training examples per epoch, for the normalized weight decay λ = λ_norm·√(b / (B·T)). digits has 1797
# images and no official split: the data module holds out a stratified 20 %, which leaves 1437 for training.
N_TRAIN: Final[dict[DatasetName, int]] = {
    "mnist1d": 4000,
    "digits": 1437,
    "cifar10": 50_000,
    "cifar100": 50_000,
    "imagenet32": 1_281_167,
}

DEFAULT_MAX_CELLS: Final = 5000
DEFAULT_MAX_EPOCHS: Final = 2000

# The version of the canonical form: bump it when its layout changes, so old and new fingerprints never collide.
CANONICAL_VERSION: Final = 1

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]


def _limit(info: ValidationInfo, key: str, env: str, default: int) -> int:
    """A limit from the validation context, else the environment variable ``env``, else ``default``."""
    if isinstance(info.context, dict) and key in info.context:
        return int(info.context[key])
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{env} must be an integer, got {raw!r}") from None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- Axes -----------------------------------------------------------------------------------------------------------
class LogRange(_Frozen):
    """A log-spaced axis: ``scale · base ** e`` for e = start, start + step, …, stop (inclusive).

    Exponents are computed exactly (as fractions of the given floats, then rounded once), so
    ``{"base": 2, "start": -10, "stop": 0, "step": 0.5}`` gives exactly 2^-10, 2^-9.5, …, 2^0 in every process.
    ``(stop - start) / step`` must be a whole number.
    """

    base: Annotated[PositiveFloat, Field(description="The base of the exponents (not 1).")] = 2.0
    start: Annotated[FiniteFloat, Field(description="The first exponent.")]
    stop: Annotated[FiniteFloat, Field(description="The last exponent (inclusive).")]
    step: Annotated[PositiveFloat, Field(description="Between exponents; (stop - start) / step must be whole.")]
    scale: Annotated[PositiveFloat, Field(description="Multiplies every value.")] = 1.0

    @field_validator("base")
    @classmethod
    def _base_not_one(cls, v: float) -> float:
        if v == 1:
            raise ValueError("base must not be 1 (every value would be the same)")
        return v

    @model_validator(mode="after")
    def _whole_steps(self) -> LogRange:
        self.count()
        return self

    def count(self) -> int:
        """The number of values, or raise ``ValueError`` when stop is not start plus a whole number of steps."""
        n = (Fraction(self.stop) - Fraction(self.start)) / Fraction(self.step)
        # Within a millionth of a step counts as whole: decimal steps such as 0.1 are not exact in binary.
        whole = round(n)
        if whole < 0 or abs(n - whole) > Fraction(1, 10**6):
            raise ValueError(
                f"stop must be start plus a whole number of steps (>= 0); got start={self.start}, "
                f"stop={self.stop}, step={self.step}"
            )
        return whole + 1

    def values(self) -> list[float]:
        """The axis as explicit floats, in increasing exponent order."""
        start, step = Fraction(self.start), Fraction(self.step)
        out = []
        for i in range(self.count()):
            try:
                v = self.scale * self.base ** float(start + i * step)
            except OverflowError:
                v = math.inf
            if not math.isfinite(v) or v == 0:
                raise ValueError(f"{self.scale}·{self.base}^{float(start + i * step)} is not a finite non-zero float")
            out.append(v)
        return out


def _axis_kind(value: Any) -> str:
    return "list" if isinstance(value, list | tuple) else "range"


# Discriminated by the input's shape, so that an error reports only the form that was meant (loc ... "list" or
# ... "range"), not one failure per member of the union.
Axis = Annotated[
    Annotated[list[FiniteFloat], Field(min_length=1), Tag("list")] | Annotated[LogRange, Tag("range")],
    Discriminator(_axis_kind),
]
"""An axis: an explicit list of numbers, or a :class:`LogRange`."""


def expand_axis(axis: Axis) -> list[float]:
    """The values of an axis as floats, in the order given (a range: increasing exponent)."""
    return axis.values() if isinstance(axis, LogRange) else [float(v) for v in axis]


class Grid(_Frozen):
    """One optimizer's (α, λ) grid: every α of ``lr`` with every λ of ``weight_decay``.

    ``lr`` values are α > 0; ``weight_decay`` values are λ ≥ 0 in the sweep's ``weight_decay_units``. Neither axis
    may be empty or hold duplicates.
    """

    optimizer: Annotated[OptimizerName, Field(description="sgd and adam: L2; sgdw and adamw: decoupled decay.")]
    lr: Annotated[Axis, Field(description="α values (> 0): a list of numbers, or a LogRange.")]
    weight_decay: Annotated[
        Axis,
        Field(description="λ values (≥ 0) in the sweep's weight_decay_units (raw: per optimizer step, as given)."),
    ]

    @field_validator("lr", "weight_decay")
    @classmethod
    def _check_axis(cls, axis: Axis, info: ValidationInfo) -> Axis:
        # Count a range before expanding it, so that a tiny step cannot make a huge list.
        cap = _limit(info, "max_cells", "WDGRID_MAX_CELLS", DEFAULT_MAX_CELLS)
        if isinstance(axis, LogRange) and axis.count() > cap:
            raise ValueError(f"has {axis.count()} values, more than the cap of {cap} cells")
        values = expand_axis(axis)
        if not values:
            raise ValueError("must not be empty")
        for v in values:
            if info.field_name == "lr" and v <= 0:
                raise ValueError(f"α must be > 0, got {v!r}")
            if v < 0:
                raise ValueError(f"λ must be >= 0, got {v!r}")
        dupes = sorted(v for v, n in Counter(values).items() if n > 1)
        if dupes:
            raise ValueError(f"holds duplicate values {dupes}")
        return axis

    def lrs(self) -> list[float]:
        """α values, as floats."""
        return expand_axis(self.lr)

    def weight_decays(self) -> list[float]:
        """λ values as given (raw or normalized: the sweep says which), as floats."""
        return expand_axis(self.weight_decay)


# --- Schedules ------------------------------------------------------------------------------------------------------
class FixedSchedule(_Frozen):
    """``fixed``: η_t = 1."""

    name: Annotated[Literal["fixed"], Field(description="The schedule.")]


class StepSchedule(_Frozen):
    """``step``: η_t = ``factor`` ** (drops so far); ``drop_epochs`` None means 30/60/80 % of the run."""

    name: Annotated[Literal["step"], Field(description="The schedule.")]
    drop_epochs: Annotated[
        list[PositiveFloat] | None, Field(description="Epochs at which η_t is multiplied by factor.")
    ] = None
    factor: Annotated[
        float, Field(strict=True, allow_inf_nan=False, gt=0, le=1, description="η_t's multiplier at each drop.")
    ] = 0.1


class CosineSchedule(_Frozen):
    """``cosine``: η_t = 0.5 + 0.5·cos(π·t/T) over the whole run."""

    name: Annotated[Literal["cosine"], Field(description="The schedule.")]


class WarmRestartsSchedule(_Frozen):
    """``warm_restarts`` (SGDR): cosine periods of ``t_0``, ``t_0·t_mult``, … epochs."""

    name: Annotated[Literal["warm_restarts"], Field(description="The schedule.")]
    t_0: Annotated[PositiveFloat, Field(description="The first period, in epochs.")] = 10.0
    t_mult: Annotated[
        float, Field(strict=True, allow_inf_nan=False, ge=1, description="Each period is this times the last.")
    ] = 2.0


Schedule = Annotated[
    FixedSchedule | StepSchedule | CosineSchedule | WarmRestartsSchedule,
    Field(discriminator="name"),
]


# --- The spec -------------------------------------------------------------------------------------------------------
class SweepSpec(_Frozen):
    """A sweep: one data set and model, a schedule, seeds, and one (α, λ) grid per optimizer.

    ``name`` and ``description`` are for people; they do not enter the fingerprint. Everything else does.
    """

    name: Annotated[str, Field(max_length=200, description="For people; not part of the fingerprint.")] = ""
    description: Annotated[str, Field(max_length=4000, description="For people; not part of the fingerprint.")] = ""
    dataset: Annotated[
        DatasetName,
        Field(
            description="mnist1d and digits are generated or bundled; cifar10, cifar100, imagenet32 load from "
            "WDGRID_DATA_DIR."
        ),
    ]
    model: Annotated[ModelName, Field(description="The network every cell trains from its own seed's init.")]
    epochs: Annotated[int, Field(strict=True, ge=1, description="Epochs each cell trains (T); capped by max_epochs.")]
    batch_size: Annotated[int, Field(strict=True, ge=1, description="Examples per optimizer step (b).")]
    schedule: Annotated[
        Schedule, Field(description="η_t, the per-epoch multiplier of α (and of λ for the decoupled optimizers).")
    ]
    weight_decay_units: Annotated[
        Literal["raw", "normalized"],
        Field(
            description="raw: each grid's λ is used per optimizer step as given; normalized: it is the paper's "
            "λ_norm, converted to raw λ = λ_norm·√(b / (B·T)) (B: training examples, T: epochs or t_0)."
        ),
    ] = "raw"
    seeds: Annotated[
        list[Annotated[int, Field(strict=True, ge=0, lt=2**32)]],
        Field(min_length=1, description="Seeds of initialization and batch order; each (α, λ) trains once per seed."),
    ]
    # Declared after seeds: the cell cap in _check_grids needs them.
    grids: Annotated[
        list[Grid],
        Field(
            min_length=1, description="One (α, λ) grid per optimizer; seeds × α × λ cells each, capped by max_cells."
        ),
    ]

    @field_validator("epochs")
    @classmethod
    def _check_epochs(cls, v: int, info: ValidationInfo) -> int:
        cap = _limit(info, "max_epochs", "WDGRID_MAX_EPOCHS", DEFAULT_MAX_EPOCHS)
        if v > cap:
            raise PydanticCustomError(
                "too_many_epochs", "{epochs} epochs is more than the cap of {cap}", {"epochs": v, "cap": cap}
            )
        return v

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int]) -> list[int]:
        dupes = sorted(s for s, n in Counter(v).items() if n > 1)
        if dupes:
            raise ValueError(f"holds duplicate seeds {dupes}")
        return v

    @field_validator("grids")
    @classmethod
    def _check_grids(cls, grids: list[Grid], info: ValidationInfo) -> list[Grid]:
        # One grid per optimizer: a cell is (optimizer, α, λ, seed), and two grids of one optimizer would either
        # repeat cells or be one grid with ragged axes, which the α×λ heatmaps cannot show.
        names = [g.optimizer for g in grids]
        dupes = sorted(n for n, k in Counter(names).items() if k > 1)
        if dupes:
            raise ValueError(f"optimizer {', '.join(dupes)} appears in more than one grid")
        seeds = info.data.get("seeds")
        if seeds is not None:
            n_cells = len(seeds) * sum(len(g.lrs()) * len(g.weight_decays()) for g in grids)
            cap = _limit(info, "max_cells", "WDGRID_MAX_CELLS", DEFAULT_MAX_CELLS)
            if n_cells > cap:
                raise PydanticCustomError(
                    "too_many_cells",
                    "the sweep has {cells} cells (seeds × α × λ over all grids), more than the cap of {cap}",
                    {"cells": n_cells, "cap": cap},
                )
        return grids

    # --- Units ----------------------------------------------------------------------------------------------------
    def normalization_epochs(self) -> float:
        """T of the normalized decay, in epochs: ``epochs``, or ``t_0`` with warm restarts."""
        if isinstance(self.schedule, WarmRestartsSchedule):
            return self.schedule.t_0
        return float(self.epochs)

    def raw_weight_decay(self, given: float) -> float:
        """Raw per-step λ for a λ from the grid: itself when raw, λ_norm·√(b / (B·T)) when normalized."""
        if self.weight_decay_units == "raw":
            return given
        b, n, t = self.batch_size, N_TRAIN[self.dataset], self.normalization_epochs()
        return given * math.sqrt(b / (n * t))

    # --- Identity -------------------------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data that identifies the grid: no name or description, axes as explicit sorted
        floats, seeds sorted, grids sorted by optimizer, defaults filled in. Order in the spec is presentation; two
        specs with the same canonical form run the same cells."""
        return {
            "version": CANONICAL_VERSION,
            "dataset": self.dataset,
            "model": self.model,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "schedule": self.schedule.model_dump(mode="json"),
            "weight_decay_units": self.weight_decay_units,
            "seeds": sorted(self.seeds),
            "grids": [
                {"optimizer": g.optimizer, "lr": sorted(g.lrs()), "weight_decay": sorted(g.weight_decays())}
                for g in sorted(self.grids, key=lambda g: g.optimizer)
            ],
        }

    def fingerprint(self) -> str:
        """sha256 (hex) of :func:`canonical_json` of :meth:`canonical`: the sweep's identity."""
        return hashlib.sha256(canonical_json(self.canonical()).encode()).hexdigest()

    def n_cells(self) -> int:
        """seeds × α × λ, summed over the grids."""
        return len(self.seeds) * sum(len(g.lrs()) * len(g.weight_decays()) for g in self.grids)


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, floats by ``repr`` (which round-trips exactly); NaN and ∞ are refused."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
