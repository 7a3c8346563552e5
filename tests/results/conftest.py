"""Storage backends for the contract tests: SQLite file, SQLite in memory and PostgreSQL, each fresh per test.

PostgreSQL comes from ``$WDGRID_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each
test gets its own schema, dropped afterwards. Where no server answers, the PostgreSQL cases are skipped with a
reason that says so in the pytest summary (``-ra``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pg_schema_url

BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of each backend."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'wdgrid.db'}"
    elif request.param == "sqlite-memory":
        yield "sqlite://"
    else:
        yield from pg_schema_url(request.getfixturevalue("pg_admin"))


@pytest.fixture(params=["sqlite-file", "postgresql"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL that several processes or connections can share (not an in-memory database)."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'wdgrid.db'}"
    else:
        yield from pg_schema_url(request.getfixturevalue("pg_admin"))
