"""The SQL implementation of the store's contract (``results.Storage``): SQLite (a file in WAL mode, or memory) by
default, PostgreSQL (``postgresql+psycopg://user@host/db``) to scale. One file per concern: the engine and records
(``_base``), sweeps as the service sees them (``_sweeps``), the driver's lease (``_drivers``), trials as the driver
changes them (``_trials``), and reads (``_reads``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar

import tenacity
from sqlalchemy import exc

from results._contract import Storage
from results._sql._base import DEFAULT_URL, MIGRATIONS, upgrade
from results._sql._drivers import DriversSql
from results._sql._reads import ReadsSql
from results._sql._sweeps import SweepsSql
from results._sql._trials import TrialsSql

__all__ = ["DEFAULT_URL", "MIGRATIONS", "RETRIED", "SqlStorage", "transient", "upgrade"]

log = logging.getLogger("results")
F = TypeVar("F", bound=Callable[..., Any])

# The calls retried through a database outage: reads, and writes whose repetition changes nothing (an epoch already
# stored, a trial already finished, a lease already held...). create_sweep (a second sweep) and retry_trial (a
# second attempt) are not: their callers retry with what makes a repeat safe (an Idempotency-Key; the next report).
RETRIED: Final = frozenset(Storage.__abstractmethods__) - {"close", "ping", "create_sweep", "retry_trial"}


def transient(error: BaseException) -> bool:
    """An error that may pass: the database could not be reached, or dropped the connection."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.InterfaceError)


def _retrying(method: F, budget_s: float) -> F:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "store: %s failed (%s); retry %d within %.0f s",
            method.__name__,
            type(error).__name__,
            state.attempt_number,
            budget_s,
        )

    retrying = tenacity.retry(
        retry=tenacity.retry_if_exception(transient),
        wait=tenacity.wait_exponential(multiplier=0.1, max=5.0),  # 0.1, 0.2, 0.4 ... 5 s
        stop=tenacity.stop_after_delay(budget_s),
        before_sleep=before_sleep,
        reraise=True,  # the database's own error when the budget is spent: the API maps it to a 503
    )
    return functools.wraps(method)(retrying(method))  # type: ignore[return-value]


class SqlStorage(SweepsSql, DriversSql, TrialsSql, ReadsSql, Storage):
    """:class:`~results.Storage` on a SQLAlchemy URL: ``SqlStorage(url)`` opens it and migrates its schema.

    With ``retry_s`` > 0 the calls in :data:`RETRIED` ride out a database that cannot be reached for up to that many
    seconds (exponential back-off from 0.1 s to 5 s between tries, with tenacity); after that, or for any other
    error, they raise as without it."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        migrate: bool = True,
        clock: Callable[[], datetime] | None = None,
        retry_s: float = 0.0,
    ) -> None:
        super().__init__(url, migrate=migrate, clock=clock)
        self.retry_s = retry_s
        if retry_s > 0:
            for name in RETRIED:
                setattr(self, name, _retrying(getattr(self, name), retry_s))

    def __enter__(self) -> SqlStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
