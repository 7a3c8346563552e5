"""Grids and long tables read back from a real SQLite store filled through the store's own API."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not a dependency (yet)
import pytest

from results import SqlStorage, Storage, SweepRecord, TrialRecord
from results.grids import cell_stats, epochs_frame, grid_csv, grid_frame, seed_grids, trials_frame
from tests.factories import fill_sweep, make_spec

# make_spec(): sgd α ∈ {0.05, 0.1, 0.2} × λ ∈ {0.0, 0.0005}, adamw 3 α × 1 λ, seeds 0 and 1; 3 epochs.


def error_of(t: TrialRecord) -> float | None:
    """sgd at α = 0.2 diverges: on both seeds at λ = 0.0005, on seed 1 only at λ = 0. Elsewhere a known error."""
    if t.optimizer == "sgd" and t.lr == 0.2 and (t.weight_decay == 0.0005 or t.seed == 1):
        return None
    return error_of_cell(t.lr, t.weight_decay, t.seed)


def error_of_cell(lr: float, wd: float, seed: int) -> float:
    return 10.0 * lr + 1000.0 * wd + seed


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as s:
        yield s


@pytest.fixture
def sweep(store: Storage) -> SweepRecord:
    return fill_sweep(store, make_spec(), error_of)


def test_cell_stats_average_completed_seeds_and_count_diverged_ones(store: Storage, sweep: SweepRecord):
    stats = cell_stats(store, sweep.id, "sgd").set_index(["lr", "weight_decay"])
    ok = stats.loc[(0.1, 0.0005)]
    assert (ok["mean"], ok["std"], ok["n"], ok["n_diverged"], ok["state"]) == pytest.approx(
        (2.0, math.sqrt(0.5), 2, 0, "ok")
    )
    partly = stats.loc[(0.2, 0.0)]
    assert (partly["mean"], partly["n"], partly["n_diverged"], partly["state"]) == (2.0, 1, 1, "partly diverged")
    assert math.isnan(partly["std"])
    gone = stats.loc[(0.2, 0.0005)]
    assert (gone["n"], gone["n_diverged"], gone["state"]) == (0, 2, "diverged")
    assert math.isnan(gone["mean"])
    assert len(stats) == 6


def test_grid_frame_has_lr_down_and_wd_across(store: Storage, sweep: SweepRecord):
    g = grid_frame(cell_stats(store, sweep.id, "sgd"), "n")
    assert g.index.tolist() == [0.05, 0.1, 0.2]
    assert g.columns.tolist() == [0.0, 0.0005]
    assert g.loc[0.2].tolist() == [1, 0]
    with pytest.raises(ValueError, match="value must be one of"):
        grid_frame(cell_stats(store, sweep.id, "sgd"), "lr")


def test_grid_csv_headers_are_exact_and_diverged_cells_are_text(store: Storage, sweep: SweepRecord, tmp_path: Path):
    path = tmp_path / "sgd.csv"
    csv = grid_csv(cell_stats(store, sweep.id, "sgd"), path)
    assert path.read_text() == csv
    lines = csv.splitlines()
    assert lines[0] == "lr\\weight_decay,0.0,0.0005"
    means = [float(np.mean([error_of_cell(0.05, wd, s) for s in (0, 1)])) for wd in (0.0, 0.0005)]
    assert lines[1] == f"0.05,{means[0]!r},{means[1]!r}"
    assert lines[3] == "0.2,diverged 1/2,diverged"
    back = pd.read_csv(io.StringIO(csv), index_col=0)
    assert [float(c) for c in back.columns] == [0.0, 0.0005]
    assert float(back.loc[0.1, "0.0005"]) == np.mean([error_of_cell(0.1, 0.0005, s) for s in (0, 1)])


def test_adamw_cells_odd_lrs_come_back_exactly(store: Storage, sweep: SweepRecord):
    # adamw's α are 2^-10, 2^-9.5, 2^-9: 2^-9.5 has no short decimal, so only repr round-trips it.
    csv = grid_csv(cell_stats(store, sweep.id, "adamw"))
    lrs = [float(line.split(",")[0]) for line in csv.splitlines()[1:]]
    assert lrs == [2.0**-10, 2.0**-9.5, 2.0**-9]


def test_trials_frame_is_one_row_per_trial(store: Storage, sweep: SweepRecord, tmp_path: Path):
    frame = trials_frame(store, sweep.id)
    assert len(frame) == make_spec().n_cells() == 18
    assert frame["status"].value_counts().to_dict() == {"completed": 15, "diverged": 3}
    assert frame.loc[frame["status"] == "diverged", "test_error"].isna().all()
    frame.to_csv(tmp_path / "trials.csv", index=False)
    back = pd.read_csv(tmp_path / "trials.csv")
    assert back["lr"].tolist() == frame["lr"].tolist()


def test_epochs_frame_holds_every_epoch_with_its_place_in_the_grid(store: Storage, sweep: SweepRecord):
    frame = epochs_frame(store, sweep.id)
    assert len(frame) == 15 * 3 + 3 * 1
    last = frame[(frame["optimizer"] == "sgd") & (frame["lr"] == 0.05) & (frame["epoch"] == 3)]
    last = last[last["weight_decay"] == 0.0005]
    assert sorted(last["test_error"]) == pytest.approx([1.0, 2.0])
    assert len(epochs_frame(store, sweep.id, optimizer="adamw")) == 6 * 3


def test_seed_grids_put_diverged_cells_at_nan(store: Storage, sweep: SweepRecord):
    lrs, wds, grids = seed_grids(store, sweep.id, "sgd")
    assert (lrs, wds, sorted(grids)) == ([0.05, 0.1, 0.2], [0.0, 0.0005], [0, 1])
    assert grids[0][2].tolist()[0] == pytest.approx(2.0)
    assert np.isnan(grids[0][2, 1]) and np.isnan(grids[1][2]).all()


def test_each_cell_says_when_its_latest_seed_finished(store: Storage, sweep: SweepRecord):
    trials, _ = store.trials(sweep.id, optimizer="sgd")
    stats = cell_stats(store, sweep.id, "sgd").set_index(["lr", "weight_decay"])
    for (lr, wd), row in stats.iterrows():
        latest = max(t.finished_at for t in trials if (t.lr, t.weight_decay) == (lr, wd) and t.finished_at)
        assert row["finished_at"] == latest
    assert (stats["weight_decay_given"] == stats.index.get_level_values("weight_decay")).all()


def test_heatmaps_as_data_are_the_png_s_numbers(store: Storage, sweep: SweepRecord):
    from results.export import heatmaps
    from results.grids import best_cells, colour_limits

    maps, scale = heatmaps(store, sweep)
    assert [m.optimizer for m in maps] == ["sgd", "adamw"]
    sgd = cell_stats(store, sweep.id, "sgd")
    assert scale == colour_limits([sgd, cell_stats(store, sweep.id, "adamw")])
    assert maps[0].lrs == [0.05, 0.1, 0.2] and maps[0].weight_decays == [0.0, 0.0005]
    gone = next(c for c in maps[0].cells if (c["lr"], c["weight_decay"]) == (0.2, 0.0005))
    assert gone["mean"] is None and gone["state"] == "diverged"  # NaN becomes null, not a number JSON lacks
    assert [(b["lr"], b["weight_decay"]) for b in maps[0].best] == list(
        zip(best_cells(sgd)["lr"], best_cells(sgd)["weight_decay"], strict=True)
    )
