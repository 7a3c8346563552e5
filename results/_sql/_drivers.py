"""The SQL store: the lease by which one driver process at a time runs a sweep."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update

from results._records import SweepBusyError
from results._sql._base import SqlBase, _utc
from results._tables import SweepRow, TrialRow

__all__ = ["DriversSql"]

log = logging.getLogger("results")


class DriversSql(SqlBase):
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
