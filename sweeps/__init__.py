"""Sweep specifications: what an (α, λ) grid search is.

A sweep names a data set and a model from the registries, a schedule, the seeds, and one (α, λ) grid per optimizer;
this package validates it (:class:`SweepSpec`), gives it a canonical form and fingerprint, and expands it into cells
``(optimizer, α, λ, seed)`` — each with THE :class:`TrainingConfig` a worker trains — and bundles of cells that train
together. The normalized weight decay λ = λ_norm·√(b/(B·T)) lives here, once. Presets reproduce the paper's figures.
It imports nothing from ``workers``, ``results`` or ``service``: data flows from here outwards.
"""

from sweeps._expand import Bundle, Cell, SweepPlan, TrainingConfig, bundles, cells, expand
from sweeps._presets import PresetInfo, UnknownPresetError, list_presets, load_preset
from sweeps._spec import (
    DATASETS,
    DEFAULT_MAX_CELLS,
    DEFAULT_MAX_EPOCHS,
    MAX_CELLS_CEILING,
    MAX_EPOCHS_CEILING,
    MODELS,
    N_TRAIN,
    OPTIMIZERS,
    PRECISIONS,
    Axis,
    CosineScheduleSpec,
    DatasetName,
    FixedScheduleSpec,
    Grid,
    LogRange,
    ModelName,
    OptimizerName,
    Precision,
    ScheduleSpec,
    SpecLimitError,
    SpecLimits,
    StepScheduleSpec,
    SweepSpec,
    WarmRestartsScheduleSpec,
    canonical_json,
    expand_axis,
    normalized_weight_decay,
)

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_CELLS",
    "DEFAULT_MAX_EPOCHS",
    "MAX_CELLS_CEILING",
    "MAX_EPOCHS_CEILING",
    "MODELS",
    "N_TRAIN",
    "OPTIMIZERS",
    "PRECISIONS",
    "Axis",
    "Bundle",
    "Cell",
    "CosineScheduleSpec",
    "DatasetName",
    "FixedScheduleSpec",
    "Grid",
    "LogRange",
    "ModelName",
    "OptimizerName",
    "Precision",
    "PresetInfo",
    "ScheduleSpec",
    "SpecLimitError",
    "SpecLimits",
    "StepScheduleSpec",
    "SweepPlan",
    "SweepSpec",
    "TrainingConfig",
    "UnknownPresetError",
    "WarmRestartsScheduleSpec",
    "bundles",
    "canonical_json",
    "cells",
    "expand",
    "expand_axis",
    "list_presets",
    "load_preset",
    "normalized_weight_decay",
]
