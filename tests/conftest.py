"""Shared fixtures: every test session gets its own data directory (MNIST-1D is generated there once)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
