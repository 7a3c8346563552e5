"""The SQL store: sweeps as the service sees them — create (with idempotency), reuse of finished cells, status,
cancel, resume."""

from __future__ import annotations

import logging

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from results._records import (
    FINISHED,
    SWEEP_TRANSITIONS,
    ConflictError,
    SweepRecord,
    SweepStatus,
    TransitionError,
)
from results._sql._base import EPOCH_COLUMNS, SqlBase, _sweep
from results._tables import AttemptRow, EpochRow, SweepRow, TrialRow
from sweeps import SweepPlan

__all__ = ["SweepsSql"]

log = logging.getLogger("results")


class SweepsSql(SqlBase):
    def create_sweep(self, plan: SweepPlan, *, idempotency_key: str | None = None) -> SweepRecord:
        """Store a new ``pending`` sweep and one ``pending`` trial per cell of ``plan``, atomically."""
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key, plan.fingerprint)
            if existing is not None:
                return existing
        try:
            with self._session(write=True) as s:
                sweep = SweepRow(
                    name=plan.spec.name,
                    spec=plan.spec.model_dump(mode="json"),
                    fingerprint=plan.fingerprint,
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
                        "config": cell.config.as_dict(),
                    }
                    for bundle in plan.bundles
                    for cell in bundle.cells
                ]
                s.execute(insert(TrialRow), rows)
                record = _sweep(sweep)
        except IntegrityError:
            # Another process created a sweep with this idempotency key between our check and our insert.
            if idempotency_key is None:
                raise
            existing = self._by_key(idempotency_key, plan.fingerprint)
            if existing is None:
                raise
            return existing
        log.info("created sweep %d (%s, %d trials)", record.id, plan.fingerprint[:12], len(rows))
        return record

    def _by_key(self, key: str, fingerprint: str) -> SweepRecord | None:
        with self._session(write=False) as s:
            row = s.scalar(select(SweepRow).where(SweepRow.idempotency_key == key))
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                raise ConflictError(f"idempotency key {key!r} belongs to sweep {row.id}, a different spec")
            return _sweep(row)

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
                *("final_extra", "wall_time_s", "epochs_done", "git_sha", "package_versions", "device", "host"),
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
                            | {c: getattr(e, c) for c in EPOCH_COLUMNS}
                            for e in epochs
                        ],
                    )
                used[src.sweep_id] = used.get(src.sweep_id, 0) + 1
            if used:
                target.reused_from = {str(k): v for k, v in sorted(used.items())}
                log.info("sweep %d: %d finished cells reused from sweeps %s", sweep_id, sum(used.values()), used)
            return used
