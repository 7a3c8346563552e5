"""The store's tables, as SQLAlchemy 2 typed ORM classes. Private: the public interface is ``results.Storage``,
which returns frozen records, never these live objects. The schema is created and changed only by the Alembic
migrations in ``results/migrations``; a test checks that the migrated schema matches these classes.

Floats are double precision on every backend (``Double``: SQLite REAL is 8 bytes, PostgreSQL DOUBLE PRECISION);
values are never formatted to strings. Timestamps are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        float: Double(),
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON(),
    }


class SweepRow(Base):
    __tablename__ = "sweeps"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_sweeps_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict[str, Any]]
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # The process that runs the sweep ("host:pid:start") and until when its lease holds (renewed while it runs).
    driver: Mapped[str | None] = mapped_column(String(200))
    driver_lease_expires_at: Mapped[datetime | None]
    # Earlier sweeps that lent this one finished cells: {"<sweep id>": cells} (Storage.reuse_finished).
    reused_from: Mapped[dict[str, Any] | None]


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("sweep_id", "cell_id", name="uq_trials_sweep_cell"),
        Index("ix_trials_sweep_status", "sweep_id", "status"),
        Index("ix_trials_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    cell_id: Mapped[str] = mapped_column(String(32), index=True)
    bundle_id: Mapped[str] = mapped_column(String(32))
    optimizer: Mapped[str] = mapped_column(String(16))
    lr: Mapped[float]
    weight_decay: Mapped[float]
    weight_decay_given: Mapped[float]
    seed: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    lease_expires_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Final metrics: errors in percent, losses as the training loop reports them, wall time in seconds.
    final_test_error: Mapped[float | None]
    final_train_error: Mapped[float | None]
    final_test_loss: Mapped[float | None]
    final_train_loss: Mapped[float | None]
    wall_time_s: Mapped[float | None]
    epochs_done: Mapped[int | None]
    # A trainer plugin's other metrics of the last epoch: {"val_loss": 1.52, ...} (None: none).
    final_extra: Mapped[dict[str, Any] | None]
    # Provenance.
    config: Mapped[dict[str, Any]]
    git_sha: Mapped[str | None] = mapped_column(String(64))
    package_versions: Mapped[dict[str, Any] | None]
    device: Mapped[str | None] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(200))


class EpochRow(Base):
    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("trial_id", "attempt", "epoch", name="uq_epochs_trial_attempt_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    epoch: Mapped[int]
    train_loss: Mapped[float | None]
    train_error: Mapped[float | None]
    test_loss: Mapped[float | None]
    test_error: Mapped[float | None]
    eta: Mapped[float | None]
    wall_time_s: Mapped[float | None]
    # A trainer plugin's metrics beyond the columns above: {"val_loss": 1.52, ...} (None: none).
    extra: Mapped[dict[str, Any] | None]


class AttemptRow(Base):
    """One claim of a trial: where it ran and how it ended (running, completed, diverged, failed, lost, cancelled)."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("trial_id", "attempt", name="uq_attempts_trial_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(200))
    node: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None]
