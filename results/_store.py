"""The results store: sweeps, their trials (one per cell) and per-epoch metrics, behind one interface, ``Storage``.

SQLite (a file, WAL mode) by default; any SQLAlchemy URL otherwise, e.g. ``postgresql+psycopg://user@host/db``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from results._records import (
    FINISHED,
    SWEEP_TRANSITIONS,
    TRIAL_STATUSES,
    AttemptRecord,
    ConflictError,
    EpochMetrics,
    EpochRecord,
    FinalMetrics,
    GridPoint,
    NotFoundError,
    Provenance,
    StaleAttemptError,
    SweepBusyError,
    SweepRecord,
    SweepStatus,
    TransitionError,
    TrialRecord,
    TrialStatus,
)
from results._tables import AttemptRow, EpochRow, SweepRow, TrialRow
from sweeps import SweepSpec, bundles, training_config

__all__ = ["DEFAULT_URL", "MIGRATIONS", "Storage", "upgrade"]

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "sqlite:///wdgrid.db"
MIGRATIONS: Final = Path(__file__).parent / "migrations"


def _finite(x: float | None) -> float | None:
    """None for None, NaN and ±inf — the same on every backend (SQLite would turn NaN into NULL but keep inf)."""
    return None if x is None or not math.isfinite(x) else float(x)


def _utc(t: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every timestamp in the store is UTC."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _sweep(r: SweepRow) -> SweepRecord:
    created = _utc(r.created_at)
    assert created is not None
    return SweepRecord(
        r.id,
        r.name,
        r.spec,
        r.fingerprint,
        r.idempotency_key,
        r.status,  # type: ignore[arg-type]  # only ever written from SweepStatus
        created,
        _utc(r.started_at),
        _utc(r.finished_at),
        r.error,
        r.driver,
        _utc(r.driver_lease_expires_at),
    )


def _attempt(r: AttemptRow) -> AttemptRecord:
    started = _utc(r.started_at)
    assert started is not None
    return AttemptRecord(
        r.trial_id,
        r.attempt,
        r.status,  # type: ignore[arg-type]  # only ever written from AttemptStatus
        started,
        _utc(r.finished_at),
        r.error,
        r.host,
        r.node,
        r.pid,
    )


def _trial(r: TrialRow) -> TrialRecord:
    final = None
    if r.status in FINISHED or r.status == "failed":
        final = FinalMetrics(
            r.final_test_error, r.final_train_error, r.final_test_loss, r.final_train_loss, r.wall_time_s, r.epochs_done
        )
    return TrialRecord(
        r.id,
        r.sweep_id,
        r.cell_id,
        r.bundle_id,
        r.optimizer,
        r.lr,
        r.weight_decay,
        r.weight_decay_given,
        r.seed,
        r.status,  # type: ignore[arg-type]  # only ever written from TrialStatus
        r.attempts,
        _utc(r.lease_expires_at),
        _utc(r.started_at),
        _utc(r.finished_at),
        r.error,
        final,
        r.config,
        Provenance(r.git_sha, r.package_versions, r.device, r.host),
    )


def _epoch_values(m: EpochMetrics) -> tuple[float | None, ...]:
    return tuple(_finite(getattr(m, f.name)) for f in fields(EpochMetrics) if f.name != "epoch")


# --- Engine and migrations ------------------------------------------------------------------------------------------
def _make_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, pool_pre_ping=True)
    memory = u.database in (None, "", ":memory:")
    # An in-memory database lives in one connection: share it (StaticPool) or every session sees an empty one.
    engine = (
        create_engine(u, poolclass=StaticPool, connect_args={"check_same_thread": False})
        if memory
        else create_engine(u)
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, say when a transaction begins (see _begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            # WAL: readers do not block the writer; a killed writer's unfinished transaction is rolled back.
            cur.execute("PRAGMA journal_mode=WAL")
            # Durable against a killed process (not against power loss, which would need FULL): WAL's usual setting.
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")  # ms: wait for another process's write instead of failing
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writes take the write lock up front (BEGIN IMMEDIATE), so two processes that read and then write never
        # deadlock into SQLITE_BUSY mid-transaction; reads take no lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("wdgrid_write", True) else "BEGIN")

    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (``head``: the latest) on ``engine``'s database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# --- The interface --------------------------------------------------------------------------------------------------
class Storage:
    """The durable record of sweeps, their trials and per-epoch metrics. This docstring is the contract; every
    backend (SQLite file, SQLite in memory, PostgreSQL) passes the same tests of it (``tests/results``).

    **Identity.** A sweep has an integer id and its spec's fingerprint; the same spec may be run as several sweeps.
    A trial is one cell of one sweep, unique on (sweep id, ``cell_id``). An attempt is one claim of a trial,
    numbered from 1; epoch metrics are keyed by (trial, attempt, epoch).

    **Atomicity and idempotency.** Every method is one transaction: it happens completely or not at all, also when
    the process dies mid-way. ``create_sweep`` writes the sweep and all its trials together; with an
    ``idempotency_key`` a repeated call returns the first sweep (and a key reused for another spec raises
    :class:`ConflictError`). ``record_epoch`` with the same (trial, attempt, epoch) and the same values is a no-op,
    with other values a :class:`ConflictError`: never a duplicate row. ``finish_trial`` repeated with the same
    attempt and status is a no-op. Metrics are append-only facts: nothing updates or deletes them.

    **Trial states, and who changes them:**

    ========================  =========================================================================
    pending → running          the runner, ``claim_trial``: attempts += 1, a lease of ``lease_seconds``
    running → running          the worker, ``heartbeat``, or the driver, ``renew_sweep``: renews the lease
    running → running          the driver, ``retry_trial``: the attempt failed (a crash); the next one starts
    running → completed        the driver, ``finish_trial``: the run ended, metrics finite
    running → diverged         the driver, ``finish_trial``: the loss became inf/NaN (a result, not an error)
    running → failed           the driver, ``finish_trial`` (an exception); or ``reap_expired_leases``
                               when the lease expired and the trial had ``max_attempts`` attempts
    running → pending          ``reap_expired_leases``: the lease expired (the worker died); retried later;
                               or ``acquire_sweep``: the sweep's previous driver is gone
    pending/running → cancelled  ``cancel_sweep``
    failed/cancelled → pending   ``resume_sweep``
    ========================  =========================================================================

    A worker's writes name its attempt: once that attempt is no longer the trial's running one (reaped, cancelled,
    finished), ``heartbeat`` returns False and ``finish_trial`` raises :class:`StaleAttemptError`, so a worker that
    was presumed dead cannot overwrite its successor. No trial stays ``running`` forever: the lease
    (``lease_expires_at``) expires unless renewed, and whoever runs the sweep calls ``reap_expired_leases``.

    **Attempts.** Every claim of a trial is an attempt row: where it ran (``locate_attempt``: host, Ray node,
    process) and how it ended — like its trial, or ``lost`` (lease expired, driver gone) or ``cancelled``.
    ``attempts(trial_id)`` lists them; the trial's ``attempts`` is their count.

    **Drivers.** One process at a time runs a sweep: ``acquire_sweep`` makes it the sweep's driver for a lease that
    ``renew_sweep`` extends (with the leases of the sweep's running trials); a second driver gets
    :class:`SweepBusyError` until that lease expires or the holder is known dead. Taking a sweep over re-queues the
    trials the old driver left running. The driver is the only writer of its sweep's trials and epochs.

    **Finished** means ``completed`` or ``diverged``: resuming a sweep re-queues ``failed`` and ``cancelled``
    trials and leaves finished ones alone; ``finished_cell_ids`` lists finished cells for reuse across sweeps.

    **Sweep states:** pending → running → completed | failed; pending/running → cancelled; failed/cancelled →
    pending (resume). ``set_sweep_status`` checks these; the runner makes them.

    **Numbers.** Floats are stored as double precision, exactly. inf and NaN are stored as NULL and read back as
    None on every backend; the trial's status (``diverged``) says why. Errors are in percent, times in seconds,
    λ raw per step (``weight_decay``) and as the spec gave it (``weight_decay_given``). Timestamps are UTC.
    """

    def __init__(
        self, url: str | None = None, *, migrate: bool = True, clock: Callable[[], datetime] | None = None
    ) -> None:
        """Open the store at ``url`` (else ``$WDGRID_DATABASE_URL``, else :data:`DEFAULT_URL`, a SQLite file in the
        working directory) and, with ``migrate``, bring its schema to the latest migration. ``clock`` gives the
        current UTC time (tests pass a fake one to expire leases)."""
        self.url = url or os.environ.get("WDGRID_DATABASE_URL") or DEFAULT_URL
        self._engine = _make_engine(self.url)
        self._clock = clock or (lambda: datetime.now(UTC))
        if migrate:
            upgrade(self._engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        with self._engine.connect() as conn:
            conn.execution_options(wdgrid_write=write)
            with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                yield session

    def _now(self) -> datetime:
        return self._clock()

    @staticmethod
    def _get_trial(s: Session, trial_id: int) -> TrialRow:
        row = s.get(TrialRow, trial_id)
        if row is None:
            raise NotFoundError(f"no trial with id {trial_id}")
        return row

    @staticmethod
    def _get_sweep(s: Session, sweep_id: int) -> SweepRow:
        row = s.get(SweepRow, sweep_id)
        if row is None:
            raise NotFoundError(f"no sweep with id {sweep_id}")
        return row

    # --- Sweeps ---------------------------------------------------------------------------------------------------
    def create_sweep(self, spec: SweepSpec, *, idempotency_key: str | None = None) -> SweepRecord:
        """Store a new ``pending`` sweep and one ``pending`` trial per cell of ``spec``, atomically."""
        fingerprint = spec.fingerprint()
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key, fingerprint)
            if existing is not None:
                return existing
        try:
            with self._session(write=True) as s:
                sweep = SweepRow(
                    name=spec.name,
                    spec=spec.model_dump(mode="json"),
                    fingerprint=fingerprint,
                    idempotency_key=idempotency_key,
                    status="pending",
                    created_at=self._now(),
                )
                s.add(sweep)
                s.flush()
                rows = [
                    {
                        "sweep_id": sweep.id,
                        "cell_id": cell.cell_id,
                        "bundle_id": bundle.bundle_id,
                        "optimizer": cell.optimizer,
                        "lr": cell.lr,
                        "weight_decay": cell.weight_decay,
                        "weight_decay_given": cell.weight_decay_given,
                        "seed": cell.seed,
                        "status": "pending",
                        "attempts": 0,
                        "config": dict(training_config(spec, cell)),
                    }
                    for bundle in bundles(spec)
                    for cell in bundle.cells
                ]
                s.execute(insert(TrialRow), rows)
                record = _sweep(sweep)
        except IntegrityError:
            # Another process created a sweep with this idempotency key between our check and our insert.
            if idempotency_key is None:
                raise
            existing = self._by_key(idempotency_key, fingerprint)
            if existing is None:
                raise
            return existing
        log.info("created sweep %d (%s, %d trials)", record.id, fingerprint[:12], len(rows))
        return record

    def _by_key(self, key: str, fingerprint: str) -> SweepRecord | None:
        with self._session(write=False) as s:
            row = s.scalar(select(SweepRow).where(SweepRow.idempotency_key == key))
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                raise ConflictError(f"idempotency key {key!r} belongs to sweep {row.id}, a different spec")
            return _sweep(row)

    def get_sweep(self, sweep_id: int) -> SweepRecord:
        with self._session(write=False) as s:
            return _sweep(self._get_sweep(s, sweep_id))

    def list_sweeps(
        self, *, status: SweepStatus | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[SweepRecord], int]:
        """Sweeps by id, optionally of one status: (``limit`` rows from ``offset``, the total count)."""
        where = [] if status is None else [SweepRow.status == status]
        with self._session(write=False) as s:
            count = s.scalar(select(func.count()).select_from(SweepRow).where(*where)) or 0
            rows = s.scalars(select(SweepRow).where(*where).order_by(SweepRow.id).offset(offset).limit(limit))
            return [_sweep(r) for r in rows], count

    def set_sweep_status(self, sweep_id: int, status: SweepStatus, *, error: str | None = None) -> SweepRecord:
        """Move a sweep along its states (see the class docstring); setting the current status again is a no-op."""
        with self._session(write=True) as s:
            row = self._get_sweep(s, sweep_id)
            current: SweepStatus = row.status  # type: ignore[assignment]
            if status == current:
                return _sweep(row)
            if status not in SWEEP_TRANSITIONS[current]:
                raise TransitionError(f"sweep {sweep_id} is {current}; it cannot become {status}")
            now = self._now()
            row.status = status
            row.error = error
            if status == "running" and row.started_at is None:
                row.started_at = now
            row.finished_at = now if status in ("completed", "failed", "cancelled") else None
            return _sweep(row)

    def cancel_sweep(self, sweep_id: int) -> int:
        """Cancel the sweep and its pending and running trials; returns how many trials were cancelled."""
        with self._session(write=True) as s:
            row = self._get_sweep(s, sweep_id)
            if row.status in ("completed", "failed"):
                raise TransitionError(f"sweep {sweep_id} is {row.status}; it cannot be cancelled")
            now = self._now()
            row.status, row.finished_at = "cancelled", now
            row.driver, row.driver_lease_expires_at = None, None
            running = s.scalars(
                select(TrialRow.id).where(TrialRow.sweep_id == sweep_id, TrialRow.status == "running")
            ).all()
            self._close_attempts(s, running, "cancelled", error="the sweep was cancelled", now=now)
            ids = s.scalars(
                update(TrialRow)
                .where(TrialRow.sweep_id == sweep_id, TrialRow.status.in_(("pending", "running")))
                .values(status="cancelled", lease_expires_at=None, finished_at=now)
                .returning(TrialRow.id)
            ).all()
            return len(ids)

    def resume_sweep(self, sweep_id: int) -> int:
        """Re-queue the sweep's failed and cancelled trials and make it pending; returns how many were re-queued.
        Finished (completed, diverged) trials stay as they are."""
        with self._session(write=True) as s:
            row = self._get_sweep(s, sweep_id)
            if row.status == "running":
                raise TransitionError(f"sweep {sweep_id} is running; cancel it before resuming")
            if row.status == "completed":  # nothing failed or was cancelled: resuming would only reopen it
                raise TransitionError(f"sweep {sweep_id} is completed; only failed or cancelled sweeps resume")
            row.status, row.finished_at, row.error = "pending", None, None
            ids = s.scalars(
                update(TrialRow)
                .where(TrialRow.sweep_id == sweep_id, TrialRow.status.in_(("failed", "cancelled")))
                .values(status="pending", lease_expires_at=None, finished_at=None, error=None)
                .returning(TrialRow.id)
            ).all()
            return len(ids)

    # --- Trials: the runner and the workers -----------------------------------------------------------------------
    def claim_trial(
        self,
        sweep_id: int,
        *,
        lease_seconds: float,
        bundle_id: str | None = None,
        cell_id: str | None = None,
        trial_id: int | None = None,
    ) -> TrialRecord | None:
        """Claim the sweep's first pending trial (optionally of one bundle, one cell, or the trial with this id):
        it becomes running, its attempts go up by one and its lease runs ``lease_seconds``. None when nothing
        (of that kind) is pending. Safe to call from several processes at once: each pending trial is claimed
        once."""
        where = [TrialRow.sweep_id == sweep_id, TrialRow.status == "pending"]
        if trial_id is not None:
            where.append(TrialRow.id == trial_id)
        if bundle_id is not None:
            where.append(TrialRow.bundle_id == bundle_id)
        if cell_id is not None:
            where.append(TrialRow.cell_id == cell_id)
        with self._session(write=True) as s:
            # PostgreSQL: lock the row and skip rows other claimers hold. SQLite: BEGIN IMMEDIATE already
            # serializes writers, and FOR UPDATE is not rendered.
            claimed = s.scalar(
                select(TrialRow.id).where(*where).order_by(TrialRow.id).limit(1).with_for_update(skip_locked=True)
            )
            if claimed is None:
                return None
            trial_id = claimed
            now = self._now()
            s.execute(
                update(TrialRow)
                .where(TrialRow.id == trial_id)
                .values(
                    status="running",
                    attempts=TrialRow.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=now,
                    error=None,
                )
                .execution_options(synchronize_session=False)
            )
            row = self._get_trial(s, trial_id)
            s.add(AttemptRow(trial_id=trial_id, attempt=row.attempts, status="running", started_at=now))
            return _trial(row)

    def heartbeat(self, trial_id: int, attempt: int, *, lease_seconds: float) -> bool:
        """Renew the lease of a running attempt. False when ``attempt`` is no longer running: the worker should stop."""
        with self._session(write=True) as s:
            renewed = s.scalars(
                update(TrialRow)
                .where(TrialRow.id == trial_id, TrialRow.status == "running", TrialRow.attempts == attempt)
                .values(lease_expires_at=self._now() + timedelta(seconds=lease_seconds))
                .returning(TrialRow.id)
            ).all()
            return bool(renewed)

    def record_epoch(self, trial_id: int, attempt: int, metrics: EpochMetrics) -> bool:
        """Append one epoch's metrics of an attempt. True if written; False if the same values were already there."""
        return self.record_epochs(trial_id, attempt, [metrics]) == 1

    def record_epochs(self, trial_id: int, attempt: int, metrics: Sequence[EpochMetrics]) -> int:
        """Append several epochs of one attempt in one transaction; returns how many rows were new. An epoch already
        stored with the same values is skipped; with other values the whole call raises :class:`ConflictError`.
        ``attempt`` must have been claimed (1 ≤ attempt ≤ attempts); an earlier attempt's late epochs are still
        stored, under that attempt: they are facts about it, and readers choose the attempt they want."""
        return self.record_epochs_many([(trial_id, attempt, metrics)])

    def record_epochs_many(self, batches: Sequence[tuple[int, int, Sequence[EpochMetrics]]]) -> int:
        """:meth:`record_epochs` for several (trial, attempt, metrics) at once, in one transaction (all or nothing):
        how the driver writes one report of a bundle's cells. Returns how many rows were new."""
        for _, _, metrics in batches:
            epochs = [m.epoch for m in metrics]
            if len(set(epochs)) != len(epochs):
                raise ValueError(f"epochs repeat within one call: {sorted(epochs)}")
        if not any(metrics for _, _, metrics in batches):
            return 0
        with self._session(write=True) as s:
            return sum(self._record_epochs(s, t, a, m) for t, a, m in batches if m)

    def _record_epochs(self, s: Session, trial_id: int, attempt: int, metrics: Sequence[EpochMetrics]) -> int:
        epochs = [m.epoch for m in metrics]
        trial = self._get_trial(s, trial_id)
        if not 1 <= attempt <= trial.attempts:
            raise StaleAttemptError(f"trial {trial_id} has had {trial.attempts} attempts; got attempt {attempt}")
        stored = {
            r.epoch: (r.train_loss, r.train_error, r.test_loss, r.test_error, r.eta, r.wall_time_s)
            for r in s.scalars(
                select(EpochRow).where(
                    EpochRow.trial_id == trial_id,
                    EpochRow.attempt == attempt,
                    # A range, not IN (...): a batch may hold more epochs than a statement may hold parameters.
                    EpochRow.epoch.between(min(epochs), max(epochs)),
                )
            )
        }
        new = []
        for m in metrics:
            values = _epoch_values(m)
            if m.epoch in stored:
                if stored[m.epoch] != values:
                    raise ConflictError(
                        f"trial {trial_id} attempt {attempt} epoch {m.epoch} is stored as {stored[m.epoch]}, "
                        f"not {values}"
                    )
                continue
            new.append(m)
        if new:
            s.execute(
                insert(EpochRow),
                [
                    {
                        "trial_id": trial_id,
                        "attempt": attempt,
                        "epoch": m.epoch,
                        **dict(zip(_EPOCH_COLUMNS, _epoch_values(m), strict=True)),
                    }
                    for m in new
                ],
            )
        return len(new)

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
        """End a running attempt with its result and provenance. Repeating the same call is a no-op; any other call
        for an attempt that is not running raises :class:`StaleAttemptError`."""
        if status not in ("completed", "diverged", "failed"):
            raise ValueError(f"status must be completed, diverged or failed, got {status!r}")
        final = final or FinalMetrics()
        prov = provenance or Provenance()
        with self._session(write=True) as s:
            row = self._get_trial(s, trial_id)
            if row.status != "running" or row.attempts != attempt:
                if row.status == status and row.attempts == attempt:
                    return _trial(row)
                raise StaleAttemptError(
                    f"trial {trial_id} is {row.status} at attempt {row.attempts}; attempt {attempt} cannot finish it"
                )
            row.status = status
            row.lease_expires_at = None
            row.finished_at = self._now()
            row.error = error
            row.final_test_error = _finite(final.test_error)
            row.final_train_error = _finite(final.train_error)
            row.final_test_loss = _finite(final.test_loss)
            row.final_train_loss = _finite(final.train_loss)
            row.wall_time_s = _finite(final.wall_time_s)
            row.epochs_done = final.epochs_done
            row.git_sha, row.package_versions = prov.git_sha, prov.package_versions
            row.device, row.host = prov.device, prov.host
            self._close_attempts(s, [trial_id], status, error=error, now=row.finished_at)
            return _trial(row)

    def reap_expired_leases(self, now: datetime | None = None, *, max_attempts: int = 3) -> list[int]:
        """Return running trials whose lease expired before ``now`` (default: the clock) to pending, or make them
        failed once they have had ``max_attempts`` attempts (claims over the trial's life). Returns their ids."""
        now = now or self._now()
        expired = [TrialRow.status == "running", TrialRow.lease_expires_at < now]
        with self._session(write=True) as s:
            self._close_attempts(
                s, s.scalars(select(TrialRow.id).where(*expired)).all(), "lost", error="lease expired", now=now
            )
            failed = s.scalars(
                update(TrialRow)
                .where(*expired, TrialRow.attempts >= max_attempts)
                .values(
                    status="failed",
                    lease_expires_at=None,
                    finished_at=now,
                    error=f"lease expired after {max_attempts} attempts",
                )
                .returning(TrialRow.id)
            ).all()
            retried = s.scalars(
                update(TrialRow).where(*expired).values(status="pending", lease_expires_at=None).returning(TrialRow.id)
            ).all()
        if failed or retried:
            log.warning("expired leases: %d trials re-queued, %d failed", len(retried), len(failed))
        return sorted([*failed, *retried])

    def retry_trial(self, trial_id: int, attempt: int, *, error: str, lease_seconds: float) -> TrialRecord:
        """End a running attempt as ``failed`` with ``error`` and start the next attempt of the same trial at once
        (attempts += 1, a fresh lease): the runner's retry of a crashed worker. :class:`StaleAttemptError` when
        ``attempt`` is not the trial's running attempt."""
        with self._session(write=True) as s:
            row = self._get_trial(s, trial_id)
            if row.status != "running" or row.attempts != attempt:
                raise StaleAttemptError(
                    f"trial {trial_id} is {row.status} at attempt {row.attempts}; attempt {attempt} cannot retry"
                )
            now = self._now()
            self._close_attempts(s, [trial_id], "failed", error=error, now=now)
            row.attempts += 1
            row.lease_expires_at = now + timedelta(seconds=lease_seconds)
            row.error = error
            s.add(AttemptRow(trial_id=trial_id, attempt=row.attempts, status="running", started_at=now))
            return _trial(row)

    def locate_attempt(
        self, trial_id: int, attempt: int, *, host: str | None = None, node: str | None = None, pid: int | None = None
    ) -> None:
        """Record where an attempt runs: host name, Ray node id, worker process id."""
        with self._session(write=True) as s:
            s.execute(
                update(AttemptRow)
                .where(AttemptRow.trial_id == trial_id, AttemptRow.attempt == attempt)
                .values(host=host, node=node, pid=pid)
            )

    @staticmethod
    def _close_attempts(
        s: Session, trial_ids: Sequence[int], status: str, *, error: str | None, now: datetime | None
    ) -> None:
        """End the running attempts of these trials (each trial has at most one) with ``status``."""
        if trial_ids:
            s.execute(
                update(AttemptRow)
                .where(AttemptRow.trial_id.in_(trial_ids), AttemptRow.status == "running")
                .values(status=status, finished_at=now, error=error)
                .execution_options(synchronize_session=False)
            )

    def reuse_finished(self, sweep_id: int) -> dict[int, int]:
        """Fill the sweep's pending trials from finished trials of earlier sweeps with the same fingerprint (the
        same cell ids: the same training runs), in one transaction: the earliest finished trial of each cell lends
        its status, final metrics, provenance and its last attempt's epochs, stored as this trial's attempt 1 (an
        attempt row says where they came from). Returns {source sweep id: cells reused}."""
        with self._session(write=True) as s:
            target = self._get_sweep(s, sweep_id)
            pending = {
                t.cell_id: t
                for t in s.scalars(select(TrialRow).where(TrialRow.sweep_id == sweep_id, TrialRow.status == "pending"))
            }
            if not pending:
                return {}
            sources: dict[str, TrialRow] = {}
            for t in s.scalars(
                select(TrialRow)
                .join(SweepRow, SweepRow.id == TrialRow.sweep_id)
                .where(
                    SweepRow.fingerprint == target.fingerprint,
                    TrialRow.sweep_id != sweep_id,
                    TrialRow.status.in_(FINISHED),
                )
                .order_by(TrialRow.finished_at, TrialRow.id)
            ):
                if t.cell_id in pending:
                    sources.setdefault(t.cell_id, t)
            now, used = self._now(), dict[int, int]()
            copied = [
                *("status", "final_test_error", "final_train_error", "final_test_loss", "final_train_loss"),
                *("wall_time_s", "epochs_done", "git_sha", "package_versions", "device", "host"),
            ]
            for cell_id, src in sources.items():
                dst = pending[cell_id]
                for name in copied:
                    setattr(dst, name, getattr(src, name))
                dst.attempts, dst.started_at, dst.finished_at = 1, src.started_at, src.finished_at
                s.add(
                    AttemptRow(
                        trial_id=dst.id,
                        attempt=1,
                        status=src.status,
                        started_at=now,
                        finished_at=now,
                        error=f"reused: trial {src.id} of sweep {src.sweep_id}, attempt {src.attempts}",
                    )
                )
                epochs = s.scalars(
                    select(EpochRow).where(EpochRow.trial_id == src.id, EpochRow.attempt == src.attempts)
                ).all()
                if epochs:
                    s.execute(
                        insert(EpochRow),
                        [
                            {"trial_id": dst.id, "attempt": 1, "epoch": e.epoch}
                            | {c: getattr(e, c) for c in _EPOCH_COLUMNS}
                            for e in epochs
                        ],
                    )
                used[src.sweep_id] = used.get(src.sweep_id, 0) + 1
            if used:
                log.info("sweep %d: %d finished cells reused from sweeps %s", sweep_id, sum(used.values()), used)
            return used

    # --- Sweeps: the driver that runs one -------------------------------------------------------------------------
    def acquire_sweep(
        self,
        sweep_id: int,
        driver: str,
        *,
        lease_seconds: float,
        holder_dead: Callable[[str], bool] | None = None,
    ) -> int:
        """Make ``driver`` the one process that runs the sweep, for ``lease_seconds`` (renew with
        :meth:`renew_sweep`). Succeeds when no driver holds the sweep, when ``driver`` already does, when the
        holder's lease has expired, or when ``holder_dead(holder)`` says the holder is gone (a process on this host
        that no longer exists). The previous driver's running trials go back to pending, their attempts ``lost``:
        nothing runs them any more. Returns how many were re-queued. :class:`SweepBusyError` names a live holder."""
        with self._session(write=True) as s:
            row = self._get_sweep(s, sweep_id)
            now = self._now()
            holder, until = row.driver, _utc(row.driver_lease_expires_at)
            live = holder not in (None, driver) and until is not None and until > now
            if live and (holder_dead is None or not holder_dead(str(holder))):
                raise SweepBusyError(
                    f"sweep {sweep_id} is being run by {holder} (its lease runs until {until:%Y-%m-%d %H:%M:%S} "
                    "UTC); stop that process or wait for its lease to expire"
                )
            row.driver, row.driver_lease_expires_at = driver, now + timedelta(seconds=lease_seconds)
            if holder == driver:
                return 0
            orphans = s.scalars(
                select(TrialRow.id).where(TrialRow.sweep_id == sweep_id, TrialRow.status == "running")
            ).all()
            gone = f"its driver {holder} stopped" if holder else "no driver ran it"
            self._close_attempts(s, orphans, "lost", error=gone, now=now)
            if orphans:
                s.execute(
                    update(TrialRow)
                    .where(TrialRow.id.in_(orphans))
                    .values(status="pending", lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )
                log.warning("sweep %d: %d trials of a stopped driver re-queued", sweep_id, len(orphans))
            return len(orphans)

    def renew_sweep(self, sweep_id: int, driver: str, *, lease_seconds: float) -> bool:
        """Renew the driver's lease on the sweep and the leases of the sweep's running trials, in one transaction.
        False when ``driver`` no longer holds the sweep (it was cancelled, or another driver took it over)."""
        with self._session(write=True) as s:
            until = self._now() + timedelta(seconds=lease_seconds)
            held = s.scalars(
                update(SweepRow)
                .where(SweepRow.id == sweep_id, SweepRow.driver == driver)
                .values(driver_lease_expires_at=until)
                .returning(SweepRow.id)
            ).all()
            if not held:
                return False
            s.execute(
                update(TrialRow)
                .where(TrialRow.sweep_id == sweep_id, TrialRow.status == "running")
                .values(lease_expires_at=until)
                .execution_options(synchronize_session=False)
            )
            return True

    def release_sweep(self, sweep_id: int, driver: str) -> None:
        """``driver`` stops running the sweep (a no-op if it no longer holds it)."""
        with self._session(write=True) as s:
            s.execute(
                update(SweepRow)
                .where(SweepRow.id == sweep_id, SweepRow.driver == driver)
                .values(driver=None, driver_lease_expires_at=None)
            )

    # --- Reading --------------------------------------------------------------------------------------------------
    def attempts(self, trial_id: int) -> list[AttemptRecord]:
        """Every attempt of a trial, in order."""
        with self._session(write=False) as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.trial_id == trial_id).order_by(AttemptRow.attempt))
            return [_attempt(r) for r in rows]

    def sweep_attempts(self, sweep_id: int) -> list[AttemptRecord]:
        """Every attempt of every trial of a sweep, by trial then attempt."""
        q = (
            select(AttemptRow)
            .join(TrialRow, TrialRow.id == AttemptRow.trial_id)
            .where(TrialRow.sweep_id == sweep_id)
            .order_by(AttemptRow.trial_id, AttemptRow.attempt)
        )
        with self._session(write=False) as s:
            return [_attempt(r) for r in s.scalars(q)]

    def get_trial(self, trial_id: int) -> TrialRecord:
        with self._session(write=False) as s:
            return _trial(self._get_trial(s, trial_id))

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
        where = [TrialRow.sweep_id == sweep_id]
        if status is not None:
            where.append(TrialRow.status == status)
        if optimizer is not None:
            where.append(TrialRow.optimizer == optimizer)
        with self._session(write=False) as s:
            count = s.scalar(select(func.count()).select_from(TrialRow).where(*where)) or 0
            rows = s.scalars(select(TrialRow).where(*where).order_by(TrialRow.id).offset(offset).limit(limit))
            return [_trial(r) for r in rows], count

    def epochs(self, trial_id: int, *, attempt: int | None = None) -> list[EpochRecord]:
        """A trial's epoch metrics, by attempt then epoch (one attempt's if ``attempt`` is given)."""
        where = [EpochRow.trial_id == trial_id]
        if attempt is not None:
            where.append(EpochRow.attempt == attempt)
        with self._session(write=False) as s:
            rows = s.scalars(select(EpochRow).where(*where).order_by(EpochRow.attempt, EpochRow.epoch))
            return [
                EpochRecord(
                    trial_id=r.trial_id,
                    attempt=r.attempt,
                    **{c: getattr(r, c) for c in ("epoch", *_EPOCH_COLUMNS)},
                )
                for r in rows
            ]

    def status_counts(self, sweep_id: int) -> dict[TrialStatus, int]:
        """How many of the sweep's trials are in each status (every status present, zeros included)."""
        counts: dict[TrialStatus, int] = dict.fromkeys(TRIAL_STATUSES, 0)
        with self._session(write=False) as s:
            for status, n in s.execute(
                select(TrialRow.status, func.count()).where(TrialRow.sweep_id == sweep_id).group_by(TrialRow.status)
            ):
                counts[status] = n  # type: ignore[index]  # only ever written from TrialStatus
        return counts

    def finished_since(self, sweep_id: int, since: datetime) -> int:
        """How many of the sweep's trials finished (completed, diverged or failed) at or after ``since``: with the
        sweep's ``started_at``, the cells its runs trained, not the ones reused from earlier sweeps."""
        with self._session(write=False) as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(TrialRow)
                    .where(
                        TrialRow.sweep_id == sweep_id,
                        TrialRow.status.in_(("completed", "diverged", "failed")),
                        TrialRow.finished_at >= since,
                    )
                )
                or 0
            )

    def finished_cell_ids(self, *, sweep_id: int | None = None, fingerprint: str | None = None) -> frozenset[str]:
        """Cell ids with a finished (completed or diverged) trial in one sweep, or in any sweep of a fingerprint."""
        if (sweep_id is None) == (fingerprint is None):
            raise ValueError("give exactly one of sweep_id and fingerprint")
        q = select(TrialRow.cell_id).where(TrialRow.status.in_(FINISHED))
        if sweep_id is not None:
            q = q.where(TrialRow.sweep_id == sweep_id)
        else:
            q = q.join(SweepRow, SweepRow.id == TrialRow.sweep_id).where(SweepRow.fingerprint == fingerprint)
        with self._session(write=False) as s:
            return frozenset(s.scalars(q))

    def grid(self, sweep_id: int, optimizer: str) -> list[GridPoint]:
        """One optimizer's α×λ×seed points of a sweep with their final test error, ordered by (α, λ, seed)."""
        cols = (
            TrialRow.id,
            TrialRow.cell_id,
            TrialRow.lr,
            TrialRow.weight_decay,
            TrialRow.weight_decay_given,
            TrialRow.seed,
            TrialRow.status,
            TrialRow.final_test_error,
        )
        q = (
            select(*cols)
            .where(TrialRow.sweep_id == sweep_id, TrialRow.optimizer == optimizer)
            .order_by(TrialRow.lr, TrialRow.weight_decay, TrialRow.seed)
        )
        with self._session(write=False) as s:
            return [GridPoint(*row) for row in s.execute(q)]  # type: ignore[arg-type]  # status: a TrialStatus


_EPOCH_COLUMNS: Final = tuple(f.name for f in fields(EpochMetrics) if f.name != "epoch")
