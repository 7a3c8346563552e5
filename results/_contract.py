"""The store's contract: :class:`Storage`. Its docstring is the contract; every backend passes the same tests of it
(``tests/results``), and every method here is used by the product."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

from results._records import (
    AttemptRecord,
    EpochRecord,
    FinalMetrics,
    GridPoint,
    Provenance,
    SweepRecord,
    SweepStatus,
    TrialRecord,
    TrialStatus,
)
from sweeps import SweepPlan

__all__ = ["Storage"]


class Storage(ABC):
    """The durable record of sweeps, their trials (one per cell) and per-epoch metrics.

    **Identity.** A sweep has an integer id and its spec's fingerprint; the same spec may be run as several sweeps.
    A trial is one cell of one sweep, unique on (sweep id, ``cell_id``). An attempt is one claim of a trial,
    numbered from 1; epoch metrics are keyed by (trial, attempt, epoch).

    **Atomicity and idempotency.** Every method is one transaction: it happens completely or not at all, also when
    the process dies mid-way. ``create_sweep`` writes the sweep and all its trials together, from a
    :class:`~sweeps.SweepPlan` (the expansion is ``sweeps``' job); with an ``idempotency_key`` a repeated call returns
    the first sweep (a key reused for another spec raises :class:`ConflictError`). ``record_epochs`` with an epoch
    already stored with the same values skips it, with other values raises :class:`ConflictError`: never a duplicate
    row. ``finish_trial`` repeated with the same attempt and status is a no-op. Metrics are append-only facts.

    **Who writes.** The service accepts sweeps (``create_sweep``, ``reuse_finished``) and changes their state on
    request (``cancel_sweep``, ``resume_sweep``). Everything else that writes is done by a sweep's *driver*, the one
    process that runs the sweep on Ray (``service.fanout``), identified by a driver id ``host:pid:nonce``:

    ========================  =========================================================================
    pending → running          ``claim_trial``: attempts += 1, a new attempt row
    running → running          ``retry_trial``: the attempt failed (a crashed worker); the next one starts
    running → completed        ``finish_trial``: the run ended, metrics finite
    running → diverged         ``finish_trial``: the loss became inf/NaN (a result, not an error)
    running → failed           ``finish_trial``: the last retry failed too
    running → pending          ``acquire_sweep`` by a new driver: the previous driver is gone; its attempts ``lost``
    pending/running → cancelled  ``cancel_sweep``
    failed/cancelled → pending   ``resume_sweep``
    ========================  =========================================================================

    **Leases.** A driver holds its sweep through a lease (``acquire_sweep``) that it renews every heartbeat
    (``renew_sweep``, which also stamps the running trials' ``lease_expires_at``). Workers never write: they report
    to the driver. A second driver gets :class:`SweepBusyError` until the holder's lease expires or the holder is known
    dead (``holder_dead``); taking a sweep over re-queues the trials the old driver left running, so no trial stays
    ``running`` without a live driver for longer than a lease. A driver's writes name its attempt: once that attempt
    is no longer the trial's running one (cancelled, taken over, finished), ``finish_trial`` and ``retry_trial`` raise
    :class:`StaleAttemptError` and ``renew_sweep`` returns False, so a driver presumed dead overwrites nothing.

    **Finished** means ``completed`` or ``diverged``: resuming a sweep re-queues ``failed`` and ``cancelled``
    trials and leaves finished ones alone; ``reuse_finished`` copies finished cells of earlier sweeps of the same
    fingerprint into a new sweep.

    **Sweep states:** pending → running → completed | failed; pending/running → cancelled; failed/cancelled →
    pending (resume). ``set_sweep_status`` checks these.

    **Numbers.** Floats are stored as double precision, exactly. inf and NaN are stored as NULL and read back as
    None on every backend; the trial's status (``diverged``) says why. Errors are in percent, times in seconds,
    λ raw per step (``weight_decay``) and as the spec gave it (``weight_decay_given``). Timestamps are UTC.
    """

    url: str
    """Where the store is (a SQLAlchemy URL): a driver process opens the same store from it."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    # --- Sweeps: the service ----------------------------------------------------------------------------------------
    @abstractmethod
    def create_sweep(self, plan: SweepPlan, *, idempotency_key: str | None = None) -> SweepRecord:
        """Store a new ``pending`` sweep and one ``pending`` trial per cell of ``plan``, atomically."""

    @abstractmethod
    def reuse_finished(self, sweep_id: int) -> dict[int, int]:
        """Fill the sweep's pending trials from finished trials of earlier sweeps with the same fingerprint, in one
        transaction: the earliest finished trial of each cell lends its status, final metrics, provenance and its
        last attempt's epochs, stored as this trial's attempt 1; the sweep's ``reused_from`` records where they came
        from. Returns {source sweep id: cells reused}."""

    @abstractmethod
    def set_sweep_status(self, sweep_id: int, status: SweepStatus, *, error: str | None = None) -> SweepRecord:
        """Move a sweep along its states; setting the current status again is a no-op."""

    @abstractmethod
    def cancel_sweep(self, sweep_id: int) -> int:
        """Cancel the sweep and its pending and running trials; returns how many trials were cancelled."""

    @abstractmethod
    def resume_sweep(self, sweep_id: int) -> int:
        """Re-queue the sweep's failed and cancelled trials and make it pending; returns how many were re-queued."""

    # --- Sweeps: the driver -----------------------------------------------------------------------------------------
    @abstractmethod
    def acquire_sweep(
        self, sweep_id: int, driver: str, *, lease_seconds: float, holder_dead: Callable[[str], bool] | None = None
    ) -> int:
        """Make ``driver`` the one process that runs the sweep for ``lease_seconds``; returns how many trials of a
        previous driver were re-queued. :class:`SweepBusyError` names a live holder."""

    @abstractmethod
    def renew_sweep(self, sweep_id: int, driver: str, *, lease_seconds: float) -> bool:
        """Renew the driver's lease (and its running trials'); False when ``driver`` no longer holds the sweep."""

    @abstractmethod
    def release_sweep(self, sweep_id: int, driver: str) -> None:
        """``driver`` stops running the sweep (a no-op if it no longer holds it)."""

    # --- Trials: the driver -----------------------------------------------------------------------------------------
    @abstractmethod
    def claim_trial(self, sweep_id: int, *, lease_seconds: float, trial_id: int | None = None) -> TrialRecord | None:
        """Claim the pending trial ``trial_id`` (None: the sweep's first pending one): it becomes running with a new
        attempt and a lease of ``lease_seconds``. None when it is not pending. Each pending trial is claimed once,
        also by concurrent callers."""

    @abstractmethod
    def record_epochs(self, records: Sequence[EpochRecord]) -> int:
        """Append epochs of any trials and attempts in one transaction (all or nothing); returns how many rows were
        new. ``attempt`` must have been claimed; an earlier attempt's late epochs are stored under that attempt."""

    @abstractmethod
    def finish_trial(
        self,
        trial_id: int,
        attempt: int,
        status: Literal["completed", "diverged", "failed"],
        *,
        final: FinalMetrics | None = None,
        provenance: Provenance | None = None,
        error: str | None = None,
    ) -> TrialRecord:
        """End a running attempt with its result and provenance."""

    @abstractmethod
    def retry_trial(self, trial_id: int, attempt: int, *, error: str, lease_seconds: float) -> TrialRecord:
        """End a running attempt as ``failed`` with ``error`` and start the trial's next attempt at once."""

    @abstractmethod
    def locate_attempt(
        self, trial_id: int, attempt: int, *, host: str | None = None, node: str | None = None, pid: int | None = None
    ) -> None:
        """Record where an attempt runs: host name, Ray node id, worker process id."""

    # --- Reading ----------------------------------------------------------------------------------------------------
    @abstractmethod
    def get_sweep(self, sweep_id: int) -> SweepRecord:
        """:class:`NotFoundError` when there is none."""

    @abstractmethod
    def list_sweeps(
        self, *, status: SweepStatus | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[SweepRecord], int]:
        """Sweeps by id, optionally of one status: (``limit`` rows from ``offset``, the total count)."""

    @abstractmethod
    def get_trial(self, trial_id: int) -> TrialRecord:
        """:class:`NotFoundError` when there is none."""

    @abstractmethod
    def trials(
        self,
        sweep_id: int,
        *,
        status: TrialStatus | None = None,
        optimizer: str | None = None,
        offset: int = 0,
        limit: int = 1000,
    ) -> tuple[list[TrialRecord], int]:
        """A sweep's trials by id, optionally filtered: (``limit`` rows from ``offset``, the total count)."""

    @abstractmethod
    def attempts(self, trial_id: int) -> list[AttemptRecord]:
        """Every attempt of a trial, in order."""

    @abstractmethod
    def epochs(self, trial_id: int, *, attempt: int | None = None) -> list[EpochRecord]:
        """A trial's epoch metrics, by attempt then epoch (one attempt's if ``attempt`` is given)."""

    @abstractmethod
    def sweep_epochs(self, sweep_id: int) -> list[EpochRecord]:
        """Every stored epoch of every attempt of every trial of a sweep, by trial, attempt and epoch (one query)."""

    @abstractmethod
    def status_counts(self, sweep_id: int) -> dict[TrialStatus, int]:
        """How many of the sweep's trials are in each status (every status present, zeros included)."""

    @abstractmethod
    def finished_since(self, sweep_id: int, since: datetime) -> int:
        """How many of the sweep's trials finished (completed, diverged or failed) at or after ``since``."""

    @abstractmethod
    def grid(self, sweep_id: int, optimizer: str, metric: str = "test_error") -> list[GridPoint]:
        """One optimizer's α×λ×seed points of a sweep with the final value of ``metric`` (``test_error``,
        ``test_loss``, ``train_error``, ``train_loss``, or a trainer's other metric), ordered by (α, λ, seed)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise when the database does not answer (``/readyz``)."""
