"""The SQL implementation of the store's contract (``results.Storage``): SQLite (a file in WAL mode, or memory) by
default, PostgreSQL (``postgresql+psycopg://user@host/db``) to scale. One file per concern: the engine and records
(``_base``), sweeps as the service sees them (``_sweeps``), the driver's lease (``_drivers``), trials as the driver
changes them (``_trials``), and reads (``_reads``)."""

from __future__ import annotations

from results._contract import Storage
from results._sql._base import DEFAULT_URL, MIGRATIONS, upgrade
from results._sql._drivers import DriversSql
from results._sql._reads import ReadsSql
from results._sql._sweeps import SweepsSql
from results._sql._trials import TrialsSql

__all__ = ["DEFAULT_URL", "MIGRATIONS", "SqlStorage", "upgrade"]


class SqlStorage(SweepsSql, DriversSql, TrialsSql, ReadsSql, Storage):
    """:class:`~results.Storage` on a SQLAlchemy URL: ``SqlStorage(url)`` opens it and migrates its schema."""

    def __enter__(self) -> SqlStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
