"""Figures drawn from a real SQLite store: each PNG has the promised size and is not blank."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from results import SqlStorage, Storage, SweepRecord, TrialRecord
from results.figures import heatmap_png, learning_curves_png, twins_png
from results.grids import cell_stats, epochs_frame
from tests.factories import fill_sweep, make_spec

OPTIMIZERS = ("sgd", "sgdw", "adam", "adamw")
AXIS = {"base": 2, "start": -8, "stop": -4, "step": 1}  # 5 values: 2^-8 .. 2^-4


def error_of(t: TrialRecord) -> float | None:
    """A diagonal valley for the L2 optimizers, an axis-aligned bowl for the decoupled ones; one corner diverges."""
    x, y = np.log2(t.lr) + 6, np.log2(t.weight_decay) + 6
    if x + y >= 4:
        return None
    valley = (x + y) ** 2 if t.optimizer in ("sgd", "adam") else x**2 + y**2
    return float(2.0 + valley + 0.1 * t.seed)


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Storage, SweepRecord]]:
    grids = [{"optimizer": o, "lr": AXIS, "weight_decay": AXIS} for o in OPTIMIZERS]
    with SqlStorage(f"sqlite:///{tmp_path_factory.mktemp('figures') / 'wdgrid.db'}") as store:
        yield store, fill_sweep(store, make_spec(grids=grids), error_of)


def assert_png(path: Path, size: tuple[int, int]) -> None:
    image = imread(path)
    assert (image.shape[1], image.shape[0]) == size
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50  # colours, text and lines: not a blank canvas
    assert rgb.std() > 0.1


def test_a_heatmap_png(sweep_store: tuple[Storage, SweepRecord], tmp_path: Path):
    store, sweep = sweep_store
    stats = cell_stats(store, sweep.id, "sgd")
    assert (stats["state"] == "diverged").any()
    assert_png(heatmap_png(stats, tmp_path / "sgd.png", title="sgd"), (600, 500))


def test_twins_share_one_png(sweep_store: tuple[Storage, SweepRecord], tmp_path: Path):
    store, sweep = sweep_store
    stats = {o: cell_stats(store, sweep.id, o) for o in OPTIMIZERS}
    assert_png(twins_png(stats, tmp_path / "twins.png"), (1100, 1000))
    assert_png(twins_png({o: stats[o] for o in ("sgd", "sgdw")}, tmp_path / "one.png"), (1100, 500))
    with pytest.raises(ValueError, match="no L2 optimizer with its twin"):
        twins_png({"sgd": stats["sgd"]}, tmp_path / "none.png")


def test_learning_curves_png(sweep_store: tuple[Storage, SweepRecord], tmp_path: Path):
    store, sweep = sweep_store
    stats = {o: cell_stats(store, sweep.id, o) for o in OPTIMIZERS}
    assert_png(learning_curves_png(epochs_frame(store, sweep.id), stats, tmp_path / "curves.png"), (800, 500))
