"""Storage backends for the contract tests: SQLite file, SQLite in memory and PostgreSQL, each fresh per test.

PostgreSQL comes from ``$WDGRID_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each
test gets its own schema, dropped afterwards. Where no server answers, the PostgreSQL cases are skipped with a
reason that says so in the pytest summary (``-ra``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("WDGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]


def _pg_admin() -> sa.Engine | str:
    """An engine on the test server, or why there is none."""
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        engine.dispose()
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return engine


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    admin = _pg_admin()
    if isinstance(admin, str):
        pytest.skip(
            f"PostgreSQL backend NOT TESTED: no server at {make_url(PG_URL).render_as_string(hide_password=True)} "
            f"({admin}). Start one on 127.0.0.1:5432 or set WDGRID_TEST_PG_URL."
        )
    yield admin
    admin.dispose()


def _pg_schema_url(admin: sa.Engine) -> Iterator[str]:
    schema = f"wdgrid_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of each backend."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'wdgrid.db'}"
    elif request.param == "sqlite-memory":
        yield "sqlite://"
    else:
        yield from _pg_schema_url(request.getfixturevalue("pg_admin"))


@pytest.fixture(params=["sqlite-file", "postgresql"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL that several processes or connections can share (not an in-memory database)."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'wdgrid.db'}"
    else:
        yield from _pg_schema_url(request.getfixturevalue("pg_admin"))
