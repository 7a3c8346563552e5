"""Shared fixtures: every test session gets its own data directory (MNIST-1D is generated there once)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def wdgrid_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("wdgrid-data")
    old = os.environ.get("WDGRID_DATA_DIR")
    os.environ["WDGRID_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("WDGRID_DATA_DIR", None)
    else:
        os.environ["WDGRID_DATA_DIR"] = old
