"""Results: the durable store of sweeps, trials and per-epoch metrics, and the views derived from it.

The store (SQLAlchemy; SQLite by default, PostgreSQL to scale) holds append-only facts; α×λ grids as CSV,
Figure-2 heatmaps, separability metrics and the Optuna export are computed from those facts, never stored instead of
them. :class:`Storage` (``results._contract``) is the store's contract, and its docstring says it;
:class:`SqlStorage` (``results._sql``) implements it on SQLite and PostgreSQL.

Grids (:mod:`results.grids`) and separability (:mod:`results.separability`) are exported here; figures
(:mod:`results.figures`, matplotlib) and the Optuna export (:mod:`results.optuna_export`) are imported from their
modules, so that importing ``results`` does not load matplotlib or Optuna.
"""

from results._contract import Storage
from results._records import (
    FINISHED,
    AttemptRecord,
    AttemptStatus,
    ConflictError,
    EpochRecord,
    FinalMetrics,
    GridPoint,
    NotFoundError,
    Provenance,
    StaleAttemptError,
    StoreError,
    SweepBusyError,
    SweepRecord,
    SweepStatus,
    TransitionError,
    TrialRecord,
    TrialStatus,
)
from results._sql import DEFAULT_URL, MIGRATIONS, SqlStorage, transient, upgrade
from results.grids import cell_stats, epochs_frame, grid_csv, grid_frame, seed_grids, trials_frame
from results.separability import Comparison, Separability, analyze, compare, report

__all__ = [
    "DEFAULT_URL",
    "FINISHED",
    "MIGRATIONS",
    "AttemptRecord",
    "AttemptStatus",
    "Comparison",
    "ConflictError",
    "EpochRecord",
    "FinalMetrics",
    "GridPoint",
    "NotFoundError",
    "Provenance",
    "Separability",
    "SqlStorage",
    "StaleAttemptError",
    "Storage",
    "StoreError",
    "SweepBusyError",
    "SweepRecord",
    "SweepStatus",
    "TransitionError",
    "TrialRecord",
    "TrialStatus",
    "analyze",
    "cell_stats",
    "compare",
    "epochs_frame",
    "grid_csv",
    "grid_frame",
    "report",
    "seed_grids",
    "transient",
    "trials_frame",
    "upgrade",
]
