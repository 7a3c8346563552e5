"""The SQL store: trials as the sweep's driver changes them — claim, epochs, finish, retry, where an attempt runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from results._records import (
    ConflictError,
    EpochRecord,
    FinalMetrics,
    NotFoundError,
    Provenance,
    StaleAttemptError,
    TrialRecord,
)
from results._sql._base import EPOCH_COLUMNS, SqlBase, _epoch_values, _finite, _finite_map, _trial
from results._tables import AttemptRow, EpochRow, TrialRow

__all__ = ["TrialsSql"]

_IN_BATCH: Final = 500  # ids in one IN (...): well under SQLite's and PostgreSQL's parameter limits


class TrialsSql(SqlBase):
    def claim_trial(self, sweep_id: int, *, lease_seconds: float, trial_id: int | None = None) -> TrialRecord | None:
        """Claim the pending trial ``trial_id`` (None: the sweep's first pending one): it becomes running, its
        attempts go up by one and its lease runs ``lease_seconds``. None when it is not pending. Safe to call from
        several processes at once: each pending trial is claimed once."""
        where = [TrialRow.sweep_id == sweep_id, TrialRow.status == "pending"]
        if trial_id is not None:
            where.append(TrialRow.id == trial_id)
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

    def record_epochs(self, records: Sequence[EpochRecord]) -> int:
        """Append epochs of any trials and attempts in one transaction (all or nothing): how the driver writes one
        report of a chunk's cells. Returns how many rows were new. An epoch already stored with the same values is
        skipped; with other values the whole call raises :class:`ConflictError`. ``attempt`` must have been claimed
        (1 ≤ attempt ≤ attempts); an earlier attempt's late epochs are still stored, under that attempt: they are
        facts about it, and readers choose the attempt they want."""
        batches: dict[tuple[int, int], list[EpochRecord]] = {}
        for r in records:
            batches.setdefault((r.trial_id, r.attempt), []).append(r)
        for (trial_id, attempt), batch in batches.items():
            epochs = [r.epoch for r in batch]
            if len(set(epochs)) != len(epochs):
                raise ValueError(
                    f"epochs of trial {trial_id} attempt {attempt} repeat within one call: {sorted(epochs)}"
                )
        if not batches:
            return 0
        with self._session(write=True) as s:
            # Three statements a call, whatever its number of cells (a report holds one epoch of each of a chunk's
            # cells): the trials' attempt counts, the epochs already stored, the new rows.
            ids = sorted({t for t, _ in batches})
            attempts: dict[int, int] = {}
            for i in range(0, len(ids), _IN_BATCH):
                query = select(TrialRow.id, TrialRow.attempts).where(TrialRow.id.in_(ids[i : i + _IN_BATCH]))
                for trial_id, count in s.execute(query):
                    attempts[trial_id] = count
            for trial_id, attempt in batches:
                if trial_id not in attempts:
                    raise NotFoundError(f"no trial with id {trial_id}")
                if not 1 <= attempt <= attempts[trial_id]:
                    raise StaleAttemptError(
                        f"trial {trial_id} has had {attempts[trial_id]} attempts; got attempt {attempt}"
                    )
            stored = self._stored_epochs(s, ids, [r.epoch for r in records])
            new = []
            for (trial_id, attempt), batch in batches.items():
                for m in batch:
                    values = _epoch_values(m)
                    before = stored.get((trial_id, attempt, m.epoch))
                    if before is None:
                        new.append(m)
                    elif before != values:
                        raise ConflictError(
                            f"trial {trial_id} attempt {attempt} epoch {m.epoch} is stored as {before}, not {values}"
                        )
            if new:
                s.execute(
                    insert(EpochRow),
                    [
                        {
                            "trial_id": m.trial_id,
                            "attempt": m.attempt,
                            "epoch": m.epoch,
                            **dict(zip(EPOCH_COLUMNS, _epoch_values(m), strict=True)),
                        }
                        for m in new
                    ],
                )
            return len(new)

    @staticmethod
    def _stored_epochs(
        s: Session, trial_ids: Sequence[int], epochs: Sequence[int]
    ) -> dict[tuple[int, int, int], tuple[Any, ...]]:
        """(trial, attempt, epoch) -> stored values, for the trials' epochs in the range of ``epochs`` (a superset
        of those asked about)."""
        columns = [getattr(EpochRow, c) for c in EPOCH_COLUMNS]
        out = {}
        for i in range(0, len(trial_ids), _IN_BATCH):
            query = select(EpochRow.trial_id, EpochRow.attempt, EpochRow.epoch, *columns).where(
                EpochRow.trial_id.in_(trial_ids[i : i + _IN_BATCH]),
                # A range, not IN (...): a call may hold more epochs than a statement may hold parameters.
                EpochRow.epoch.between(min(epochs), max(epochs)),
            )
            for row in s.execute(query):
                out[(row[0], row[1], row[2])] = tuple(row[3:])
        return out

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
            row.final_extra = _finite_map(final.extra)
            row.git_sha, row.package_versions = prov.git_sha, prov.package_versions
            row.device, row.host = prov.device, prov.host
            self._close_attempts(s, [trial_id], status, error=error, now=row.finished_at)
            return _trial(row)

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
