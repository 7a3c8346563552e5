"""Small valid specs and metrics for tests: each factory returns a valid object that a test then bends."""

from __future__ import annotations

import copy
from typing import Any

from results import EpochMetrics
from sweeps import SweepSpec

_SPEC: dict[str, Any] = {
    "name": "test sweep",
    "description": "a tiny spec for tests",
    "dataset": "mnist1d",
    "model": "mlp",
    "epochs": 3,
    "batch_size": 128,
    "schedule": {"name": "cosine"},
    "weight_decay_units": "raw",
    "seeds": [0, 1],
    "grids": [
        {"optimizer": "sgd", "lr": [0.05, 0.1, 0.2], "weight_decay": [0.0, 0.0005]},
        {"optimizer": "adamw", "lr": {"base": 2, "start": -10, "stop": -9, "step": 0.5}, "weight_decay": [0.001]},
    ],
}


def spec_data(**overrides: Any) -> dict[str, Any]:
    """The raw JSON-like data of a valid spec (2 seeds; sgd 3×2 and adamw 3×1 grids: 18 cells), top-level keys
    replaced by ``overrides``."""
    return {**copy.deepcopy(_SPEC), **overrides}


def make_spec(**overrides: Any) -> SweepSpec:
    """A validated :func:`spec_data` spec."""
    return SweepSpec.model_validate(spec_data(**overrides))


def epoch_metrics(epoch: int, **overrides: Any) -> EpochMetrics:
    """Plausible metrics for one epoch: losses and errors (percent) falling with the epoch."""
    values: dict[str, Any] = {
        "train_loss": 2.0 / epoch,
        "train_error": 50.0 / epoch,
        "test_loss": 2.2 / epoch,
        "test_error": 55.0 / epoch,
        "eta": 0.5,
        "wall_time_s": 0.25 * epoch,
    }
    return EpochMetrics(epoch=epoch, **{**values, **overrides})
