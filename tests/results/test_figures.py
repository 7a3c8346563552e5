"""Figures drawn from a real SQLite store: each PNG has the promised size and is not blank."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from matplotlib.image import imread

from results import SqlStorage, Storage, SweepRecord, TrialRecord
from results.export import heatmap_png_bytes
from results.figures import circled, colour_scale, draw_heatmap, heatmap_png, learning_curves_png, twins_png
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


def test_the_default_heatmap_shows_every_optimizer_of_the_sweep(tmp_path: Path):
    # sgd and adamw are not twins: each still gets its panel (the default once drew sgd only, silently)
    grids = [{"optimizer": o, "lr": AXIS, "weight_decay": AXIS} for o in ("sgd", "adamw")]
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        sweep = fill_sweep(store, make_spec(grids=grids), error_of)
        (tmp_path / "two.png").write_bytes(heatmap_png_bytes(store, sweep))
        assert_png(tmp_path / "two.png", (1100, 500))
        three = fill_sweep(
            store, make_spec(grids=[*grids, {"optimizer": "sgdw", "lr": AXIS, "weight_decay": AXIS}]), error_of
        )
        (tmp_path / "three.png").write_bytes(heatmap_png_bytes(store, three))
        assert_png(tmp_path / "three.png", (1100, 1000))  # sgd beside sgdw, then adamw


def test_the_colour_scale_and_the_circles_suit_the_grid():
    # a 16-cell digits-like grid, errors 2.5 .. 4.4 %: the scale spans them, and 2 cells are circled, not 10
    lrs, wds = [2.0**-k for k in range(4)], [2.0**-k for k in range(4, 8)]
    errors = np.linspace(2.5, 4.4, 16)
    rows = [
        {"lr": a, "weight_decay": w, "mean": e, "std": 0.0, "n": 1, "n_diverged": 0, "n_trials": 1, "state": "ok"}
        for (a, w), e in zip([(a, w) for a in lrs for w in wds], errors, strict=True)
    ]
    stats = pd.DataFrame(rows)
    norm = colour_scale([stats])
    assert norm.vmin == 2.5 and norm.vmax == pytest.approx(4.4)
    wide = pd.DataFrame([*rows, {**rows[0], "lr": 2.0, "mean": 90.0}])
    assert colour_scale([wide]).vmax == pytest.approx(12.5)  # a 90 % cell is clipped at best + 10 points
    assert (circled(16), circled(49), circled(81), circled(400), circled(4)) == (2, 6, 10, 10, 1)
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    draw_heatmap(ax, stats, norm=norm)
    assert np.asarray(ax.collections[0].get_offsets()).shape == (2, 2)  # two circles
