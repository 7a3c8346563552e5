"""A sweep exported into an Optuna storage and loaded back with Optuna."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

from results import SqlStorage, SweepRecord, TrialRecord
from results.grids import seed_grids
from results.optuna_export import export_sweep, importance_report, param_importances, study_name
from results.separability import analyze
from tests.factories import fill_sweep, make_spec

AXIS = {"base": 2, "start": -8, "stop": -4, "step": 1}


def error_of(t: TrialRecord) -> float | None:
    """Error depends on α only for sgdw; sgd diverges at its largest α and λ."""
    if t.optimizer == "sgd" and t.lr == 0.2 and t.weight_decay == 0.0005:
        return None
    if t.optimizer == "sgdw":
        return 2.0 + (math.log2(t.lr) + 6) ** 2 + 0.01 * t.seed
    return 5.0 + t.lr + t.seed


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optuna")


@pytest.fixture(scope="module")
def exported(folder: Path) -> Iterator[tuple[SweepRecord, str]]:
    grids = [
        {"optimizer": "sgd", "lr": [0.05, 0.1, 0.2], "weight_decay": [0.0, 0.0005]},
        {"optimizer": "sgdw", "lr": AXIS, "weight_decay": AXIS},
    ]
    with SqlStorage(f"sqlite:///{folder / 'wdgrid.db'}") as store:
        sweep = fill_sweep(store, make_spec(grids=grids), error_of)
        url = f"sqlite:///{folder / 'optuna.db'}"
        assert export_sweep(store, sweep.id, url) == {o: study_name(sweep.id, o) for o in ("sgd", "sgdw")}
        yield sweep, url


def test_the_studies_load_back_with_their_trials(exported: tuple[SweepRecord, str]):
    sweep, url = exported
    study = optuna.load_study(study_name=study_name(sweep.id, "sgd"), storage=url)
    assert study.user_attrs["fingerprint"] == sweep.fingerprint
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3 * 2 * 2
    states = {(t.user_attrs["status"], t.state) for t in trials}
    assert states == {("completed", optuna.trial.TrialState.COMPLETE), ("diverged", optuna.trial.TrialState.FAIL)}
    done = next(t for t in trials if t.params == {"lr": 0.1, "weight_decay": 0.0} and t.user_attrs["seed"] == 1)
    assert done.value == 5.0 + 0.1 + 1
    assert done.intermediate_values[3] == done.value  # the last epoch's test error is the final one
    assert sorted(done.intermediate_values) == [1, 2, 3]
    # λ includes 0 here: a linear distribution; α is log.
    lr, wd = done.distributions["lr"], done.distributions["weight_decay"]
    assert isinstance(lr, FloatDistribution) and isinstance(wd, FloatDistribution)
    assert lr.log and not wd.log
    assert study.best_value == 5.0 + 0.05


def test_a_second_export_needs_overwrite(exported: tuple[SweepRecord, str], folder: Path):
    sweep, url = exported
    with SqlStorage(f"sqlite:///{folder / 'wdgrid.db'}") as store:
        with pytest.raises(optuna.exceptions.DuplicatedStudyError):
            export_sweep(store, sweep.id, url)
        export_sweep(store, sweep.id, url, overwrite=True)
    assert len(optuna.load_study(study_name=study_name(sweep.id, "sgdw"), storage=url).trials) == 5 * 5 * 2


def test_importances_see_the_parameter_that_matters(exported: tuple[SweepRecord, str]):
    sweep, url = exported
    imp = param_importances(url, study_name(sweep.id, "sgdw"))
    assert set(imp) == {"lr", "weight_decay"}
    assert imp["lr"] > 0.9
    assert sum(imp.values()) == pytest.approx(1.0)


def test_the_importance_report_puts_fanova_beside_separability(exported: tuple[SweepRecord, str], folder: Path):
    sweep, url = exported
    with SqlStorage(f"sqlite:///{folder / 'wdgrid.db'}") as store:
        lrs, wds, grids = seed_grids(store, sweep.id, "sgdw")
    by_seed = {"sgdw": {s: analyze(g, lrs, wds) for s, g in grids.items()}}
    names = {o: study_name(sweep.id, o) for o in ("sgd", "sgdw")}
    lines = importance_report(url, names, by_seed).splitlines()
    assert lines[0].split()[:3] == ["sgd", "fANOVA", "lr"] and "coupling_index" not in lines[0]
    assert lines[1].startswith("    sgdw  fANOVA lr ") and "coupling_slope +0.00" in lines[1]
    assert lines[1].endswith("(mean of 2 seeds)")
