"""The sweep spec: a validated, frozen description of an (α, λ) grid search, its canonical form and fingerprint.

Units, everywhere in this module:

- α (``lr``) is the base learning rate; the training loop multiplies it by the schedule's η_t.
- λ (``weight_decay``) is what the spec gives: raw and per optimizer step when ``weight_decay_units`` is ``"raw"``,
  the paper's normalized λ_norm (Appendix B.1) when it is ``"normalized"``. :meth:`SweepSpec.raw_weight_decay`
  converts: λ = λ_norm·√(b / (B·T)), b = ``batch_size``, B = :data:`N_TRAIN` of the data set, T = ``epochs`` — or,
  with warm restarts, T = ``t_0``, the first restart period (one raw λ per run; later, longer periods keep it).
- Every time (``epochs``, ``drop_epochs``, ``t_0``) is in epochs, as in ``workers.schedules``.

Limits come in two layers. A valid spec never exceeds the *ceilings* (:data:`MAX_CELLS_CEILING` cells,
:data:`MAX_EPOCHS_CEILING` epochs): validation checks them before expanding anything, so no spec can ask for
unbounded work. Below them, the operator's :class:`SpecLimits` (default 5000 cells, 2000 epochs; the controller's
``WDGRID_MAX_CELLS`` / ``WDGRID_MAX_EPOCHS``) are checked by :meth:`SweepSpec.check_limits` where a sweep is
accepted: the service and ``wdgrid run``. Nothing here reads the environment.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sweeps._plugins import PluginError, PluginKind, check_args, check_data_paths, installed, load_plugin

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_CELLS",
    "DEFAULT_MAX_EPOCHS",
    "MAX_CELLS_CEILING",
    "MAX_EPOCHS_CEILING",
    "METRICS",
    "MODELS",
    "N_TRAIN",
    "OPTIMIZERS",
    "PRECISIONS",
    "Axis",
    "CosineScheduleSpec",
    "DatasetName",
    "FixedScheduleSpec",
    "Grid",
    "LogRange",
    "ModelName",
    "Objective",
    "OptimizerName",
    "Precision",
    "ScheduleSpec",
    "SpecLimitError",
    "SpecLimits",
    "StepScheduleSpec",
    "SweepSpec",
    "WarmRestartsScheduleSpec",
    "canonical_json",
    "cell_time_limit",
    "expand_axis",
    "normalized_weight_decay",
    "trainer_metrics",
]

# A spec names models and data sets by their plugin (entry-point) name: wdgrid's built-ins below, or whatever an
# installed package registers (sweeps._plugins). A spec can never name a Python path, a file outside the data
# directory, or a command.
DatasetName = str
ModelName = str
OptimizerName = Literal["sgd", "sgdw", "adam", "adamw"]
# wdgrid's own fixed data sets and models (registered as entry points like any plugin, in pyproject.toml). They take
# no arguments, so checking a spec that names them imports nothing.
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
# How a cell's arithmetic runs; it changes the numbers, so it is part of every cell's training config and id.
# float32: everything in float32. float64: everything in float64 (exactness checks). bfloat16: float32 weights and
# optimizer, forward passes under bf16 autocast and image batches channels-last (the fast path on a GPU).
Precision = Literal["float32", "float64", "bfloat16"]
PRECISIONS: Final[tuple[Precision, ...]] = ("float32", "float64", "bfloat16")

# What wdgrid's own training loop measures after every epoch, each a possible objective: errors are top-1 in percent,
# losses mean cross-entropy. A trainer plugin reports its own (its METRICS).
METRICS: Final[tuple[str, ...]] = ("test_error", "test_loss", "train_error", "train_loss")

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
# No spec may exceed these, whatever the operator's limits: they bound the work validation itself may do.
MAX_CELLS_CEILING: Final = 100_000
MAX_EPOCHS_CEILING: Final = 100_000

# The version of the canonical form: bump it when its layout changes, so old and new fingerprints never collide.
# 2: the precision policy joined the training config (and with it every cell id). 3: the plugins' arguments.
# 4: the trainer, its arguments and the objective.
CANONICAL_VERSION: Final = 4

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _storable(text: str) -> str:
    """Text every backend stores and every response can encode: no NUL (PostgreSQL refuses it), no lone surrogate
    (not UTF-8)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_storable)]
MAX_SEEDS: Final = 1000
MAX_AXIS_VALUES: Final = 1000
MAX_DROPS: Final = 100
MAX_RESTARTS: Final = 10_000
MAX_BATCH: Final = 1 << 20
MAX_CELL_TIME_S: Final = 30 * 24 * 3600.0  # a month
EPOCH_TIME_S: Final = 3600.0  # the default time limit of a cell: this per epoch
HANG_GRACE_S: Final = 60.0  # a training step still running this long past its cell's time limit has its worker ended
MAX_ARGS_BYTES: Final = 4096


def _small_args(args: dict[str, JsonValue]) -> dict[str, JsonValue]:
    # Every cell's stored training config repeats its plugin arguments: 4 KB × 5000 cells stays ~20 MB a sweep,
    # where a 1 MB body's worth would be 5 GB.
    size = len(json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_ARGS_BYTES:
        raise PydanticCustomError(
            "too_large", "is {size} bytes as JSON; at most {limit}", {"size": size, "limit": MAX_ARGS_BYTES}
        )
    return args


# A plugin's arguments: a JSON object of at most 64 keys and 4 KB (the plugin's Args model, if any, says what they
# mean).
PluginArgs = Annotated[dict[str, JsonValue], Field(max_length=64), AfterValidator(_small_args)]
PositiveFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]


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
        if abs(n) > MAX_CELLS_CEILING:  # say that first: "not a whole number of steps" would mislead for 1e-9
            try:
                about = f"about {float(abs(n)) + 1:.3g}"
            except OverflowError:  # a ratio past every float
                about = "more than 1e+308"
            raise ValueError(
                f"has {about} values ((stop - start) / step + 1), more than any sweep may have "
                f"({MAX_CELLS_CEILING} cells): use a larger step"
            )
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
    Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_AXIS_VALUES), Tag("list")]
    | Annotated[LogRange, Tag("range")],
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
        if isinstance(axis, LogRange) and axis.count() > MAX_CELLS_CEILING:
            raise ValueError(f"has {axis.count()} values, more than any sweep may have ({MAX_CELLS_CEILING} cells)")
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

    # Expanded once per grid and kept: a LogRange's values are computed exactly (Fractions), not for free.
    @cached_property
    def _lr_values(self) -> tuple[float, ...]:
        return tuple(expand_axis(self.lr))

    @cached_property
    def _weight_decay_values(self) -> tuple[float, ...]:
        return tuple(expand_axis(self.weight_decay))

    def lrs(self) -> list[float]:
        """α values, as floats, in the order given."""
        return list(self._lr_values)

    def weight_decays(self) -> list[float]:
        """λ values as given (raw or normalized: the sweep says which), as floats, in the order given."""
        return list(self._weight_decay_values)


# --- Schedules ------------------------------------------------------------------------------------------------------
class FixedScheduleSpec(_Frozen):
    """``fixed``: η_t = 1."""

    name: Annotated[Literal["fixed"], Field(description="The schedule.")]


class StepScheduleSpec(_Frozen):
    """``step``: η_t = ``factor`` ** (drops so far); ``drop_epochs`` None means 30/60/80 % of the run."""

    name: Annotated[Literal["step"], Field(description="The schedule.")]
    drop_epochs: Annotated[
        list[PositiveFloat] | None,
        Field(max_length=MAX_DROPS, description="Epochs at which η_t is multiplied by factor (at most 100)."),
    ] = None
    factor: Annotated[
        float, Field(strict=True, allow_inf_nan=False, gt=0, le=1, description="η_t's multiplier at each drop.")
    ] = 0.1


class CosineScheduleSpec(_Frozen):
    """``cosine``: η_t = 0.5 + 0.5·cos(π·t/T) over the whole run."""

    name: Annotated[Literal["cosine"], Field(description="The schedule.")]


class WarmRestartsScheduleSpec(_Frozen):
    """``warm_restarts`` (SGDR): cosine periods of ``t_0``, ``t_0·t_mult``, … epochs."""

    name: Annotated[Literal["warm_restarts"], Field(description="The schedule.")]
    t_0: Annotated[PositiveFloat, Field(description="The first period, in epochs.")] = 10.0
    t_mult: Annotated[
        float, Field(strict=True, allow_inf_nan=False, ge=1, description="Each period is this times the last.")
    ] = 2.0


ScheduleSpec = Annotated[
    FixedScheduleSpec | StepScheduleSpec | CosineScheduleSpec | WarmRestartsScheduleSpec,
    Field(discriminator="name"),
]


class Objective(_Frozen):
    """What a cell's result is: the final epoch's value of one reported metric, and whether lower or higher is
    better. Grids, heatmaps, the separability verdict, the Optuna export and the CLI all read it."""

    metric: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
            description="A metric measured every epoch: test_error (default), test_loss, train_error or train_loss "
            "for wdgrid's own loop; one of a trainer's METRICS (GET /plugins) with a trainer.",
        ),
    ] = "test_error"
    mode: Annotated[Literal["min", "max"], Field(description="min: lower is better; max: higher is better.")] = "min"


# --- The spec -------------------------------------------------------------------------------------------------------
class SweepSpec(_Frozen):
    """A sweep: one data set and model, a schedule, seeds, and one (α, λ) grid per optimizer.

    ``name`` and ``description`` are for people, and ``cell_time_limit_s`` is a safeguard: they do not enter the
    fingerprint. Everything else does.
    """

    name: Annotated[Text, Field(max_length=200, description="For people; not part of the fingerprint.")] = ""
    description: Annotated[Text, Field(max_length=4000, description="For people; not part of the fingerprint.")] = ""
    dataset: Annotated[
        str,
        Field(
            max_length=100,
            description="An installed data set plugin (GET /plugins): mnist1d and digits are generated or bundled; "
            "cifar10, cifar100, imagenet32 and the file formats (npz, imagefolder, mnist, fashion_mnist, kmnist, svhn) "
            "read WDGRID_DATA_DIR.",
            json_schema_extra={"examples": list(DATASETS)},
        ),
    ]
    dataset_args: Annotated[
        PluginArgs,
        Field(
            validate_default=True,  # a plugin with required arguments refuses {}
            description="Arguments of the data set plugin (paths relative to WDGRID_DATA_DIR).",
        ),
    ] = {}
    model: Annotated[
        str,
        Field(
            max_length=100,
            description="An installed model plugin (GET /plugins): the network every cell trains from its seed's init.",
            json_schema_extra={"examples": list(MODELS)},
        ),
    ]
    model_args: Annotated[
        PluginArgs,
        Field(
            validate_default=True,
            description="Arguments of the model plugin (checked against its Args, if it has one).",
        ),
    ] = {}
    trainer: Annotated[
        str | None,
        Field(
            max_length=100,
            description="An installed trainer plugin (GET /plugins) that owns each cell's training loop, for anything "
            "that is not a classifier trained on cross-entropy; null (default): wdgrid's own loop.",
        ),
    ] = None
    trainer_args: Annotated[
        PluginArgs,
        Field(validate_default=True, description="Arguments of the trainer plugin (checked against its Args)."),
    ] = {}
    objective: Annotated[
        Objective, Field(description="The metric a cell's result is, and its direction (default: test_error, min).")
    ] = Objective()
    epochs: Annotated[int, Field(strict=True, ge=1, description="Epochs each cell trains (T); capped by max_epochs.")]
    batch_size: Annotated[
        int, Field(strict=True, ge=1, le=MAX_BATCH, description="Examples per optimizer step (b), at most 2^20.")
    ]
    schedule: Annotated[
        ScheduleSpec, Field(description="η_t, the per-epoch multiplier of α (and of λ for the decoupled optimizers).")
    ]
    precision: Annotated[
        Precision,
        Field(
            description="float32 (default); float64; bfloat16: float32 weights, bf16 autocast forward passes and "
            "channels-last images (for GPUs). Part of every cell's identity: it changes the numbers."
        ),
    ] = "float32"
    weight_decay_units: Annotated[
        Literal["raw", "normalized"],
        Field(
            description="raw: each grid's λ is used per optimizer step as given; normalized: it is the paper's "
            "λ_norm, converted to raw λ = λ_norm·√(b / (B·T)) (B: training examples, T: epochs or t_0)."
        ),
    ] = "raw"
    cell_time_limit_s: Annotated[
        float | None,
        Field(
            strict=True,
            gt=0,
            le=MAX_CELL_TIME_S,
            allow_inf_nan=False,
            description="Seconds one cell may train (resumes included; a batched chunk of cells shares it) before it "
            "is stopped and failed, not retried; null (default): one hour per epoch. Not part of the fingerprint.",
        ),
    ] = None
    seeds: Annotated[
        # < 2^31: a seed is stored in a 32-bit signed integer column on every backend
        list[Annotated[int, Field(strict=True, ge=0, lt=2**31)]],
        Field(
            min_length=1,
            max_length=MAX_SEEDS,
            description="Seeds (0 ≤ seed < 2^31) of initialization and batch order; each (α, λ) trains once per seed.",
        ),
    ]
    # Declared after seeds: the cell cap in _check_grids needs them.
    grids: Annotated[
        list[Grid],
        Field(
            min_length=1,
            max_length=4,
            description="One (α, λ) grid per optimizer; seeds × α × λ cells each, capped by max_cells.",
        ),
    ]

    @field_validator("dataset", "model", "trainer")
    @classmethod
    def _installed(cls, name: str | None, info: ValidationInfo) -> str | None:
        kind: PluginKind = "dataset" if info.field_name == "dataset" else info.field_name  # type: ignore[assignment]
        if name is not None and name not in installed(kind):
            raise PydanticCustomError(
                "unknown_plugin",
                "no {kind} named '{name}' is installed; installed: {names}",
                {"kind": kind, "name": name, "names": ", ".join(installed(kind)) or "none"},
            )
        return name

    @field_validator("dataset_args", "model_args", "trainer_args")
    @classmethod
    def _plugin_args(cls, args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind: PluginKind = str(info.field_name).removesuffix("_args")  # type: ignore[assignment]
        try:
            text = canonical_json(args)
        except ValueError:  # NaN and ±inf have no JSON form: they could never be part of an id
            raise ValueError("must be JSON: no NaN or Infinity") from None
        _storable(text)
        name = info.data.get(kind)
        if name is None:  # the name itself was refused (that error says it), or there is no trainer
            if kind == "trainer" and args and "trainer" in info.data:
                raise ValueError("trainer_args need a trainer")
            return args
        fixed: tuple[str, ...] = {"dataset": DATASETS, "model": MODELS}.get(kind, ())
        if name in fixed and installed(kind)[name].package == "wdgrid":
            if args:  # wdgrid's own take no arguments: nothing to import to know that
                raise ValueError(f"{kind} {name!r} takes no arguments; got {', '.join(sorted(args))}")
            return args
        try:
            check_args(kind, name, args)
        except PluginError as exc:
            raise ValueError(str(exc)) from None
        return args

    @field_validator("objective")
    @classmethod
    def _known_metric(cls, objective: Objective, info: ValidationInfo) -> Objective:
        if "trainer" not in info.data:  # the trainer was refused: that error says it
            return objective
        trainer = info.data["trainer"]
        metrics = METRICS if trainer is None else trainer_metrics(trainer)
        if metrics is not None and objective.metric not in metrics:
            who = "wdgrid's own training loop" if trainer is None else f"trainer {trainer!r}"
            raise PydanticCustomError(
                "unknown_metric",
                "{who} reports no metric '{metric}'; it reports: {names}",
                {"who": who, "metric": objective.metric, "names": ", ".join(metrics)},
            )
        return objective

    @field_validator("schedule")
    @classmethod
    def _bounded_schedule(cls, s: Any, info: ValidationInfo) -> Any:
        # SGDR finds a step's period by walking the periods: a microscopic t_0 or a t_mult next to 1 would make that
        # walk (and the run) endless. At most MAX_RESTARTS periods may fit in the run.
        epochs = info.data.get("epochs")
        if isinstance(s, WarmRestartsScheduleSpec) and isinstance(epochs, int):
            if s.t_mult == 1:
                periods = epochs / s.t_0
            else:
                periods = math.log1p(min(epochs * (s.t_mult - 1) / s.t_0, 1e300)) / math.log(s.t_mult)
            if not periods <= MAX_RESTARTS:
                raise PydanticCustomError(
                    "too_many_restarts",
                    "t_0 = {t_0} and t_mult = {t_mult} restart {periods} times in {epochs} epochs, more than {cap}: "
                    "give a longer t_0 or a larger t_mult",
                    {
                        "t_0": s.t_0,
                        "t_mult": s.t_mult,
                        "periods": f"{periods:.3g}",
                        "epochs": epochs,
                        "cap": MAX_RESTARTS,
                    },
                )
        return s

    @field_validator("epochs")
    @classmethod
    def _check_epochs(cls, v: int) -> int:
        if v > MAX_EPOCHS_CEILING:
            raise PydanticCustomError(
                "too_many_epochs",
                "{epochs} epochs is more than any sweep may train ({cap})",
                {"epochs": v, "cap": MAX_EPOCHS_CEILING},
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
            if n_cells > MAX_CELLS_CEILING:
                raise PydanticCustomError(
                    "too_many_cells",
                    "the sweep has {cells} cells (seeds × α × λ over all grids), more than any sweep may have ({cap})",
                    {"cells": n_cells, "cap": MAX_CELLS_CEILING},
                )
        return grids

    # --- Units ----------------------------------------------------------------------------------------------------
    def normalization_epochs(self) -> float:
        """T of the normalized decay, in epochs: ``epochs``, or ``t_0`` with warm restarts."""
        if isinstance(self.schedule, WarmRestartsScheduleSpec):
            return self.schedule.t_0
        return float(self.epochs)

    def raw_weight_decay(self, given: float) -> float:
        """Raw per-step λ for a λ from the grid: itself when raw, λ_norm·√(b / (B·T)) when normalized."""
        if self.weight_decay_units == "raw":
            return given
        return normalized_weight_decay(given, self.batch_size, self.n_train(), self.normalization_epochs())

    def n_train(self) -> int:
        """B, the data set's training examples per epoch: a built-in's, or the ``N_TRAIN`` a data set plugin
        declares. ``ValueError`` when it declares none (its size depends on its files)."""
        if self.dataset in N_TRAIN:
            return N_TRAIN[self.dataset]
        declared = getattr(load_plugin("dataset", self.dataset), "N_TRAIN", None)
        if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
            return declared
        raise ValueError(
            f"data set {self.dataset!r} does not declare its number of training examples (N_TRAIN), which the "
            "normalized weight decay needs: give λ in raw units"
        )

    @model_validator(mode="after")
    def _normalizable(self) -> SweepSpec:
        if self.weight_decay_units == "normalized":
            try:
                self.n_train()
            except (ValueError, PluginError) as exc:
                raise PydanticCustomError("not_normalizable", "weight_decay_units: {why}", {"why": str(exc)}) from None
        return self

    def check_limits(self, limits: SpecLimits) -> None:
        """Raise :class:`SpecLimitError` naming the field when the spec exceeds the operator's ``limits``."""
        if self.epochs > limits.max_epochs:
            raise SpecLimitError(
                "epochs",
                f"{self.epochs} epochs is more than this server's cap of {limits.max_epochs} (WDGRID_MAX_EPOCHS)",
            )
        if self.n_cells() > limits.max_cells:
            raise SpecLimitError(
                "grids",
                f"the sweep has {self.n_cells()} cells (seeds × α × λ over all grids), more than this server's cap "
                f"of {limits.max_cells} (WDGRID_MAX_CELLS)",
            )

    def check_data_paths(self, data_dir: Path) -> None:
        """Raise :class:`~sweeps.DataPathError` naming the argument (``field``: ``dataset_args.path``) when a path
        argument of the data set or model leads outside ``data_dir`` through a symbolic link."""
        if self.dataset_args:
            check_data_paths("dataset", self.dataset, dict(self.dataset_args), data_dir)
        if self.model_args:
            check_data_paths("model", self.model, dict(self.model_args), data_dir)
        if self.trainer is not None and self.trainer_args:
            check_data_paths("trainer", self.trainer, dict(self.trainer_args), data_dir)

    # --- Identity -------------------------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data that identifies the grid: no name or description, axes as explicit sorted
        floats, seeds sorted, grids sorted by optimizer, defaults filled in. Order in the spec is presentation; two
        specs with the same canonical form run the same cells."""
        return {
            "version": CANONICAL_VERSION,
            "dataset": self.dataset,
            "model": self.model,
            "dataset_args": self.dataset_args,
            "model_args": self.model_args,
            "trainer": self.trainer,
            "trainer_args": self.trainer_args,
            "objective": self.objective.model_dump(mode="json"),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "schedule": self.schedule.model_dump(mode="json"),
            "precision": self.precision,
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


@dataclass(frozen=True)
class SpecLimits:
    """The operator's caps on one sweep, at most the ceilings: cells (seeds × α × λ over all grids) and epochs."""

    max_cells: int = DEFAULT_MAX_CELLS
    max_epochs: int = DEFAULT_MAX_EPOCHS


class SpecLimitError(ValueError):
    """A valid spec exceeds the operator's :class:`SpecLimits`; ``field`` names the spec field to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def cell_time_limit(spec: Mapping[str, Any]) -> float:
    """The seconds one cell of a stored spec (plain data) may train: its ``cell_time_limit_s``, else one hour per
    epoch (at most :data:`MAX_CELL_TIME_S`)."""
    given = spec.get("cell_time_limit_s")
    if isinstance(given, int | float) and not isinstance(given, bool) and given > 0:
        return float(given)
    return min(MAX_CELL_TIME_S, EPOCH_TIME_S * float(spec.get("epochs") or 1))


def trainer_metrics(name: str) -> tuple[str, ...] | None:
    """The metrics a trainer plugin declares it reports (its ``METRICS``), or None when it declares none (then any
    objective is accepted, and a cell whose trainer does not report it fails naming it)."""
    try:
        declared = getattr(load_plugin("trainer", name), "METRICS", None)
    except PluginError:
        return None  # its import error is the trainer field's to report
    if isinstance(declared, list | tuple) and all(isinstance(m, str) for m in declared):
        return tuple(declared)
    return None


def normalized_weight_decay(lambda_norm: float, batch_size: int, n_train: int, epochs: float) -> float:
    """Raw per-step λ from the paper's normalized λ_norm (Appendix B.1): λ = λ_norm·√(b / (B·T)).

    Args:
        lambda_norm: λ_norm ≥ 0, the normalized weight decay (the paper's best on CIFAR-10: 0.025–0.05).
        batch_size: b > 0, examples per optimizer step.
        n_train: B > 0, training examples per epoch.
        epochs: T > 0, epochs of the run — with warm restarts, of the first restart period.

    CIFAR-10 check: λ_norm = 0.025, b = 128, B = 50,000, T = 100 gives λ ≈ 1.26e-4.
    """
    for name, value in (("batch_size", batch_size), ("n_train", n_train), ("epochs", epochs)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(lambda_norm) and lambda_norm >= 0):
        raise ValueError(f"lambda_norm must be a finite number >= 0, got {lambda_norm!r}")
    return lambda_norm * math.sqrt(batch_size / (n_train * epochs))


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, floats by ``repr`` (which round-trips exactly); NaN and ∞ are refused."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
