"""The SQL store: reading sweeps, trials, attempts, epochs and grids (read transactions: they take no lock)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from results._records import (
    TRIAL_STATUSES,
    AttemptRecord,
    EpochRecord,
    GridPoint,
    SweepRecord,
    SweepStatus,
    TrialRecord,
    TrialStatus,
)
from results._sql._base import SqlBase, _attempt, _epoch, _sweep, _trial, _utc
from results._tables import AttemptRow, EpochRow, SweepRow, TrialRow

__all__ = ["ReadsSql"]


class ReadsSql(SqlBase):
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

    def attempts(self, trial_id: int) -> list[AttemptRecord]:
        """Every attempt of a trial, in order."""
        with self._session(write=False) as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.trial_id == trial_id).order_by(AttemptRow.attempt))
            return [_attempt(r) for r in rows]

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
            return [_epoch(r) for r in rows]

    def sweep_epochs(self, sweep_id: int) -> list[EpochRecord]:
        """Every stored epoch of every attempt of every trial of a sweep, by trial, attempt and epoch (one query)."""
        q = (
            select(EpochRow)
            .join(TrialRow, TrialRow.id == EpochRow.trial_id)
            .where(TrialRow.sweep_id == sweep_id)
            .order_by(EpochRow.trial_id, EpochRow.attempt, EpochRow.epoch)
        )
        with self._session(write=False) as s:
            return [_epoch(r) for r in s.scalars(q)]

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

    def grid(self, sweep_id: int, optimizer: str, metric: str = "test_error") -> list[GridPoint]:
        """One optimizer's α×λ×seed points of a sweep with the final value of ``metric`` (a column's, or one of a
        trainer's other metrics), ordered by (α, λ, seed)."""
        column = {
            "test_error": TrialRow.final_test_error,
            "train_error": TrialRow.final_train_error,
            "test_loss": TrialRow.final_test_loss,
            "train_loss": TrialRow.final_train_loss,
        }.get(metric, TrialRow.final_extra)
        cols = (
            TrialRow.id,
            TrialRow.cell_id,
            TrialRow.lr,
            TrialRow.weight_decay,
            TrialRow.weight_decay_given,
            TrialRow.seed,
            TrialRow.status,
            column,
            TrialRow.finished_at,
        )
        q = (
            select(*cols)
            .where(TrialRow.sweep_id == sweep_id, TrialRow.optimizer == optimizer)
            .order_by(TrialRow.lr, TrialRow.weight_decay, TrialRow.seed)
        )
        with self._session(write=False) as s:
            rows = s.execute(q).all()
        extra = column is TrialRow.final_extra
        return [
            GridPoint(
                trial_id=row[0],
                cell_id=row[1],
                lr=row[2],
                weight_decay=row[3],
                weight_decay_given=row[4],
                seed=row[5],
                status=row[6],
                value=_number((row[7] or {}).get(metric)) if extra else row[7],
                finished_at=_utc(row[8]),
            )
            for row in rows
        ]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
