"""Results: the durable store of sweeps, trials and per-epoch metrics, and the views derived from it.

The store (SQLAlchemy; SQLite by default, PostgreSQL to scale) holds append-only facts; α×λ grids as CSV,
Figure-2 heatmaps, separability metrics and the Optuna export are computed from those facts, never stored instead of
them. :class:`Storage`'s docstring is the store's contract.
"""

from results._records import (
    ConflictError,
    EpochMetrics,
    EpochRecord,
    FinalMetrics,
    GridPoint,
    NotFoundError,
    Provenance,
    StaleAttemptError,
    StoreError,
    SweepRecord,
    SweepStatus,
    TransitionError,
    TrialRecord,
    TrialStatus,
)
from results._store import DEFAULT_URL, MIGRATIONS, Storage, upgrade
from results.separability import Comparison, Separability, analyze, compare, report

__all__ = [
    "DEFAULT_URL",
    "MIGRATIONS",
    "Comparison",
    "ConflictError",
    "EpochMetrics",
    "EpochRecord",
    "FinalMetrics",
    "GridPoint",
    "NotFoundError",
    "Provenance",
    "Separability",
    "StaleAttemptError",
    "Storage",
    "StoreError",
    "SweepRecord",
    "SweepStatus",
    "TransitionError",
    "TrialRecord",
    "TrialStatus",
    "analyze",
    "compare",
    "report",
    "upgrade",
]
