"""Shared fixtures: every test session gets its own data directory (MNIST-1D is generated there once), and the
PostgreSQL test server, from ``$WDGRID_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
where each user gets a schema of its own; without a server the PostgreSQL cases are skipped, saying so."""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import workers.data


@pytest.fixture(scope="session", autouse=True)
def wdgrid_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's data directory: the default of in-process training (``workers.data.DEFAULT_DATA_DIR``) and,
    through ``WDGRID_DATA_DIR``, of the servers and drivers the tests start."""
    path = tmp_path_factory.mktemp("wdgrid-data")
    old_env, old_default = os.environ.get("WDGRID_DATA_DIR"), workers.data.DEFAULT_DATA_DIR
    os.environ["WDGRID_DATA_DIR"] = str(path)
    workers.data.DEFAULT_DATA_DIR = path
    yield path
    workers.data.DEFAULT_DATA_DIR = old_default
    if old_env is None:
        os.environ.pop("WDGRID_DATA_DIR", None)
    else:
        os.environ["WDGRID_DATA_DIR"] = old_env


PG_URL = os.environ.get("WDGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


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


def pg_schema_url(admin: sa.Engine) -> Generator[str]:
    schema = f"wdgrid_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
