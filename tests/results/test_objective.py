"""A sweep read on its objective: a trainer's own metric (``val_loss``, lower is better) stored per epoch and per
trial, and every view on it — grid CSV, trials and epochs CSV, heatmaps, the separability verdict, the Optuna export
— from a real SQLite store filled through the store's API. And a metric where higher is better."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not a dependency (yet)
import pytest

from results import FinalMetrics, SqlStorage, Storage, SweepRecord, TrialRecord
from results.export import epochs_csv, grid_text, heatmap_png_bytes, objective, separability, trials_csv
from results.optuna_export import export_sweep
from tests.factories import epoch_record, make_spec

LRS = [2.0**k for k in range(-10, -5)]
WDS = [2.0**k for k in range(-12, -7)]


def val_loss(t: TrialRecord) -> float:
    """adam: a diagonal band (the best λ falls as α grows); adamw: a bowl whose best λ does not depend on α."""
    a, w = math.log2(t.lr) + 8, math.log2(t.weight_decay) + 10
    if t.optimizer == "adam":
        return 1.5 + 0.02 * (a + w) ** 2 + 0.002 * (a - w) ** 2 + 0.01 * t.seed
    return 1.5 + 0.02 * a**2 + 0.02 * w**2 + 0.01 * t.seed


def fill(store: Storage, **spec: Any) -> SweepRecord:
    grids = [{"optimizer": o, "lr": LRS, "weight_decay": WDS} for o in ("adam", "adamw")]
    plan = make_spec(
        dataset="python_source",
        model="char_transformer",
        trainer="char_lm",
        grids=grids,
        seeds=[0, 1],
        **spec,
    )
    from sweeps import expand

    sweep = store.create_sweep(expand(plan))
    while (t := store.claim_trial(sweep.id, lease_seconds=60)) is not None:
        v = val_loss(t)
        epochs = [
            epoch_record(t.id, 1, e, test_error=math.nan, test_loss=math.nan, extra={"val_loss": v + 1.0 / e})
            for e in (1, 2)
        ]
        store.record_epochs(epochs)
        final = FinalMetrics(train_loss=v, epochs_done=2, extra={"val_loss": v + 0.5, "val_bpc": (v + 0.5) / 0.69})
        store.finish_trial(t.id, 1, "completed", final=final)
    return store.get_sweep(sweep.id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as s:
        yield s


@pytest.fixture
def sweep(store: Storage) -> SweepRecord:
    return fill(store, objective={"metric": "val_loss", "mode": "min"})


def test_a_trainers_metrics_are_stored_per_epoch_and_per_trial(store: Storage, sweep: SweepRecord):
    [trial], _ = store.trials(sweep.id, limit=1)
    assert trial.final is not None and trial.final.metric("val_loss") == pytest.approx(val_loss(trial) + 0.5)
    assert [e.metric("val_loss") for e in store.epochs(trial.id)] == [val_loss(trial) + 1.0, val_loss(trial) + 0.5]
    assert store.epochs(trial.id)[0].test_error is None  # not reported: nothing stored
    points = store.grid(sweep.id, "adamw", "val_loss")
    assert len(points) == 50 and all(p.value is not None for p in points)
    assert all(p.value is None for p in store.grid(sweep.id, "adamw", "perplexity"))


def test_the_grid_the_csvs_and_the_heatmap_are_on_the_objective(store: Storage, sweep: SweepRecord):
    assert objective(sweep).metric == "val_loss"
    grid = pd.read_csv(io.StringIO(grid_text(store, sweep, "adamw")), index_col=0)
    assert grid.loc[2.0**-8, repr(2.0**-10)] == pytest.approx(1.5 + 0.5 + 0.005)  # mean over seeds 0 and 1
    trials = pd.read_csv(io.StringIO(trials_csv(store, sweep.id)))
    assert {"val_loss", "val_bpc"} <= set(trials.columns) and trials["val_loss"].notna().all()
    epochs = pd.read_csv(io.StringIO(epochs_csv(store, sweep.id)))
    assert "val_loss" in epochs.columns and len(epochs) == 200
    assert heatmap_png_bytes(store, sweep).startswith(b"\x89PNG")


def test_the_verdict_on_a_trainers_loss_tells_a_band_from_a_bowl(store: Storage, sweep: SweepRecord):
    [comparison] = separability(store, sweep)
    assert (comparison.l2, comparison.decoupled) == ("adam", "adamw")
    assert comparison.coupled_seeds == 2, comparison.verdict
    adamw = comparison.decoupled_by_seed[0]
    assert (adamw.best_lr, adamw.best_wd) == (2.0**-8, 2.0**-10)
    assert adamw.cap == pytest.approx(0.5 * adamw.best_error)  # capped relative to the best loss, not in points


def test_the_optuna_export_minimizes_the_objective(store: Storage, sweep: SweepRecord, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    names = export_sweep(store, sweep.id, url)
    study = optuna.load_study(study_name=names["adamw"], storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.best_value == pytest.approx(2.0) and study.best_params["lr"] == 2.0**-8
    assert study.best_trial.intermediate_values[1] == pytest.approx(2.5)


def test_an_objective_where_higher_is_better_reverses_best(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'max.db'}") as store:
        sweep = fill(store, objective={"metric": "val_bpc", "mode": "max"})
        [comparison] = separability(store, sweep)
        adamw = comparison.decoupled_by_seed[0]
        assert (adamw.best_lr, adamw.best_wd) != (2.0**-8, 2.0**-10)  # the worst loss is now the best value
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
        study = optuna.load_study(study_name=export_sweep(store, sweep.id, url)["adam"], storage=url)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        assert heatmap_png_bytes(store, sweep, "adam").startswith(b"\x89PNG")
