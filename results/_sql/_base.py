"""The SQL store's foundation: the engine (SQLite pragmas, PostgreSQL pool), Alembic migrations, the conversion of
rows into the contract's frozen records, and :class:`SqlBase`, which every concern's mixin builds on."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from results._records import (
    FINISHED,
    AttemptRecord,
    EpochRecord,
    FinalMetrics,
    NotFoundError,
    Provenance,
    SweepRecord,
    TrialRecord,
)
from results._tables import AttemptRow, SweepRow, TrialRow

__all__ = ["DEFAULT_URL", "EPOCH_COLUMNS", "MIGRATIONS", "SqlBase", "upgrade"]

DEFAULT_URL: Final = "sqlite:///wdgrid.db"
MIGRATIONS: Final = Path(__file__).parent.parent / "migrations"
EPOCH_COLUMNS: Final = ("train_loss", "train_error", "test_loss", "test_error", "eta", "wall_time_s", "extra")


def _finite(x: float | None) -> float | None:
    """None for None, NaN and ±inf — the same on every backend (SQLite would turn NaN into NULL but keep inf)."""
    return None if x is None or not math.isfinite(x) else float(x)


def _finite_map(values: Mapping[str, float | None] | None) -> dict[str, float | None] | None:
    """A trainer's other metrics as JSON: non-finite values → None (JSON has no NaN); empty → None."""
    return {k: _finite(v) for k, v in values.items()} if values else None


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
        {int(k): int(v) for k, v in r.reused_from.items()} if r.reused_from else None,
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
            r.final_test_error,
            r.final_train_error,
            r.final_test_loss,
            r.final_train_loss,
            r.wall_time_s,
            r.epochs_done,
            r.final_extra,
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


def _epoch_values(m: EpochRecord) -> tuple[Any, ...]:
    return (*(_finite(getattr(m, c)) for c in EPOCH_COLUMNS[:-1]), _finite_map(m.extra))


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


class SqlBase:
    """An open engine, the clock, and one transaction per call (``_session``)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, migrate: bool = True, clock: Callable[[], datetime] | None = None
    ) -> None:
        """Open the store at ``url`` (default: :data:`DEFAULT_URL`, a SQLite file in the working directory) and, with
        ``migrate``, bring its schema to the latest migration. ``clock`` gives the current UTC time (tests pass a fake
        one to expire leases)."""
        self.url = url
        self._engine = _make_engine(url)
        self._clock = clock or (lambda: datetime.now(UTC))
        if migrate:
            upgrade(self._engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("select 1"))

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


def _epoch(r: Any) -> EpochRecord:
    return EpochRecord(
        trial_id=r.trial_id, attempt=r.attempt, epoch=r.epoch, **{c: getattr(r, c) for c in EPOCH_COLUMNS}
    )
