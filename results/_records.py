"""What the store's interface takes and returns: statuses, errors and frozen records (never live ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

__all__ = [
    "ATTEMPT_STATUSES",
    "FINISHED",
    "SWEEP_TRANSITIONS",
    "TRIAL_STATUSES",
    "AttemptRecord",
    "AttemptStatus",
    "ConflictError",
    "EpochRecord",
    "FinalMetrics",
    "GridPoint",
    "NotFoundError",
    "Provenance",
    "StaleAttemptError",
    "StoreError",
    "SweepBusyError",
    "SweepRecord",
    "SweepStatus",
    "TransitionError",
    "TrialRecord",
    "TrialStatus",
]

SweepStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TrialStatus = Literal["pending", "running", "completed", "diverged", "failed", "cancelled"]
TRIAL_STATUSES: Final[tuple[TrialStatus, ...]] = get_args(TrialStatus)
# An attempt ends like its trial, or "lost": its lease expired, or the driver that ran it died.
AttemptStatus = Literal["running", "completed", "diverged", "failed", "lost", "cancelled"]
ATTEMPT_STATUSES: Final[tuple[AttemptStatus, ...]] = get_args(AttemptStatus)
FINISHED: Final[tuple[TrialStatus, ...]] = ("completed", "diverged")
SWEEP_TRANSITIONS: Final[dict[SweepStatus, frozenset[SweepStatus]]] = {
    "pending": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset({"pending"}),
    "cancelled": frozenset({"pending"}),
}


# --- Errors ---------------------------------------------------------------------------------------------------------
class StoreError(Exception):
    """Base class of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """No sweep or trial has this id."""


class TransitionError(StoreError):
    """The status change is not allowed from the current status."""


class StaleAttemptError(TransitionError):
    """The attempt is not (or no longer) the trial's running attempt: its lease expired, or it was cancelled."""


class ConflictError(StoreError):
    """A write contradicts one already stored (an epoch with other values; an idempotency key of another spec)."""


class SweepBusyError(ConflictError):
    """Another live driver holds the sweep (its lease has not expired)."""


# --- Records: what the interface takes and returns ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EpochRecord:
    """One epoch (1-based) of one attempt of one trial: what the driver writes and readers get back. Errors in
    percent; ``eta`` is η_t at the epoch's end; wall time in seconds since the attempt started. A non-finite value
    (a diverged run's inf or NaN loss) is stored as None. The metrics are the worker's ``EpochMetrics``, field for
    field; ``extra`` holds a trainer plugin's metrics of other names (None: none)."""

    trial_id: int
    attempt: int
    epoch: int
    train_loss: float | None = None
    train_error: float | None = None
    test_loss: float | None = None
    test_error: float | None = None
    eta: float | None = None
    wall_time_s: float | None = None
    extra: dict[str, float | None] | None = None

    def metric(self, name: str) -> float | None:
        """The value of a metric by name: a column, or one of ``extra`` (None when not measured or not finite)."""
        return _metric(self, name)


_COLUMN_METRICS: Final = frozenset({"train_loss", "train_error", "test_loss", "test_error"})


def _metric(record: EpochRecord | FinalMetrics, name: str) -> float | None:
    """A metric of an epoch or a trial's result: one of the columns, or a trainer's other metric in ``extra``."""
    if name in _COLUMN_METRICS:
        value: float | None = getattr(record, name)
        return value
    return (record.extra or {}).get(name)


@dataclass(frozen=True)
class FinalMetrics:
    """A trial's result: errors in percent, losses as reported, wall time in seconds, a trainer's other metrics of
    the last epoch in ``extra``; non-finite values → None."""

    test_error: float | None = None
    train_error: float | None = None
    test_loss: float | None = None
    train_loss: float | None = None
    wall_time_s: float | None = None
    epochs_done: int | None = None
    extra: dict[str, float | None] | None = None

    def metric(self, name: str) -> float | None:
        """The final value of a metric by name (None when not measured or not finite)."""
        return _metric(self, name)


@dataclass(frozen=True)
class Provenance:
    """Where a result came from: git SHA, package versions (name → version), device and host."""

    git_sha: str | None = None
    package_versions: dict[str, str] | None = None
    device: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class SweepRecord:
    id: int
    name: str
    spec: dict[str, Any]
    fingerprint: str
    idempotency_key: str | None
    status: SweepStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    driver: str | None = None
    driver_lease_expires_at: datetime | None = None
    reused_from: dict[int, int] | None = None
    """Earlier sweeps (id → cells) whose finished cells this sweep reused instead of training them; None: none."""

    @property
    def reused_cells(self) -> int:
        return sum((self.reused_from or {}).values())


@dataclass(frozen=True)
class AttemptRecord:
    """One claim of a trial (numbered from 1): how it ended, and where it ran (host, Ray node id, process id)."""

    trial_id: int
    attempt: int
    status: AttemptStatus
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    host: str | None
    node: str | None
    pid: int | None


@dataclass(frozen=True)
class TrialRecord:
    """One cell's trial. ``lr`` is α; ``weight_decay`` raw per step; ``weight_decay_given`` as the spec gave it;
    ``config`` the resolved training config; ``final`` None until the trial finished."""

    id: int
    sweep_id: int
    cell_id: str
    bundle_id: str
    optimizer: str
    lr: float
    weight_decay: float
    weight_decay_given: float
    seed: int
    status: TrialStatus
    attempts: int
    lease_expires_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    final: FinalMetrics | None
    config: dict[str, Any]
    provenance: Provenance


@dataclass(frozen=True)
class GridPoint:
    """One trial's place in an α×λ grid and its final value of the metric asked for (the sweep's objective; None
    unless finished and finite), and when it finished."""

    trial_id: int
    cell_id: str
    lr: float
    weight_decay: float
    weight_decay_given: float
    seed: int
    status: TrialStatus
    value: float | None
    finished_at: datetime | None = None  # UTC; when the trial last finished (None while it has not)
