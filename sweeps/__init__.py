"""Sweep specifications: what an (α, λ) grid search is.

A sweep names a data set and a model from the registries, a schedule, the seeds, and one (α, λ) grid per optimizer;
this package validates it (:class:`SweepSpec`), gives it a canonical form and fingerprint, and expands it into cells
``(optimizer, α, λ, seed)`` and bundles of cells that train together. Presets reproduce the paper's figures.
It imports nothing from ``workers``, ``results`` or ``service``: data flows from here outwards.
"""

from sweeps._expand import Bundle, Cell, TrainingConfig, bundles, cells, training_config
from sweeps._presets import PresetInfo, UnknownPresetError, list_presets, load_preset
from sweeps._spec import (
    DATASETS,
    DEFAULT_MAX_CELLS,
    DEFAULT_MAX_EPOCHS,
    MODELS,
    N_TRAIN,
    OPTIMIZERS,
    Axis,
    CosineSchedule,
    DatasetName,
    FixedSchedule,
    Grid,
    LogRange,
    ModelName,
    OptimizerName,
    Schedule,
    StepSchedule,
    SweepSpec,
    WarmRestartsSchedule,
    canonical_json,
    expand_axis,
)

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_CELLS",
    "DEFAULT_MAX_EPOCHS",
    "MODELS",
    "N_TRAIN",
    "OPTIMIZERS",
    "Axis",
    "Bundle",
    "Cell",
    "CosineSchedule",
    "DatasetName",
    "FixedSchedule",
    "Grid",
    "LogRange",
    "ModelName",
    "OptimizerName",
    "PresetInfo",
    "Schedule",
    "StepSchedule",
    "SweepSpec",
    "TrainingConfig",
    "UnknownPresetError",
    "WarmRestartsSchedule",
    "bundles",
    "canonical_json",
    "cells",
    "expand_axis",
    "list_presets",
    "load_preset",
    "training_config",
]
