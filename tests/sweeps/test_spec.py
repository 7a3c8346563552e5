"""Sweep specs: validation that names the field, exact axes, fingerprints and cell ids that are data."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sweeps import (
    DEFAULT_MAX_CELLS,
    DEFAULT_MAX_EPOCHS,
    MAX_CELLS_CEILING,
    LogRange,
    SpecLimitError,
    SpecLimits,
    SweepSpec,
    TrainingConfig,
    bundles,
    canonical_json,
    cell_time_limit,
    cells,
    normalized_weight_decay,
)
from tests.factories import make_spec, spec_data


def error_locs(data: dict[str, object], **context: int) -> list[tuple[int | str, ...]]:
    with pytest.raises(ValidationError) as info:
        SweepSpec.model_validate(data, context=context or None)
    return [e["loc"] for e in info.value.errors()]


def sgd_grid(**overrides: object) -> dict[str, object]:
    return {"optimizer": "sgd", "lr": [0.1], "weight_decay": [0.0], **overrides}


# --- Validation: every error names its field --------------------------------------------------------------------
def test_a_valid_spec_is_frozen():
    spec = make_spec()
    assert spec.n_cells() == 2 * (3 * 2 + 3 * 1) == len(cells(spec))
    with pytest.raises(ValidationError):
        spec.epochs = 5


def test_unknown_keys_are_rejected_at_every_level():
    assert error_locs(spec_data(learning_rate=0.1)) == [("learning_rate",)]
    assert error_locs(spec_data(grids=[sgd_grid(momentum=0.9)])) == [("grids", 0, "momentum")]
    assert error_locs(spec_data(schedule={"name": "cosine", "t_0": 5})) == [("schedule", "cosine", "t_0")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dataset", "torchvision.datasets.CIFAR10"),
        ("dataset", "/data/cifar10.npz"),
        ("model", "__import__('os').system('ls')"),
        ("model", "resnet50"),
    ],
)
def test_only_registry_names_are_accepted(field, value):
    assert error_locs(spec_data(**{field: value})) == [(field,)]


def test_unknown_optimizer_and_schedule_are_rejected():
    assert error_locs(spec_data(grids=[sgd_grid(optimizer="lion")])) == [("grids", 0, "optimizer")]
    assert error_locs(spec_data(schedule={"name": "linear"})) == [("schedule",)]


@pytest.mark.parametrize(
    ("axis", "values", "where"),
    [
        ("lr", [], "lr"),
        ("lr", [0.1, 0.0], "lr"),
        ("lr", [-0.1], "lr"),
        ("weight_decay", [-1e-4], "weight_decay"),
        ("lr", [0.1, 0.1], "lr"),
        ("weight_decay", [0.0, 0], "weight_decay"),
    ],
)
def test_bad_axis_values_name_the_axis(axis, values, where):
    locs = error_locs(spec_data(grids=[sgd_grid(**{axis: values})]))
    assert locs and all(loc[:3] == ("grids", 0, where) for loc in locs), locs


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "0.1"])
def test_axis_values_must_be_finite_numbers(bad):
    assert error_locs(spec_data(grids=[sgd_grid(lr=[0.1, bad])])) == [("grids", 0, "lr", "list", 1)]


def test_a_range_must_end_on_a_whole_step():
    locs = error_locs(spec_data(grids=[sgd_grid(lr={"base": 2, "start": -3, "stop": 0, "step": 2})]))
    assert [loc[:4] for loc in locs] == [("grids", 0, "lr", "range")]


def test_a_range_too_fine_is_refused_for_its_size_not_its_steps():
    # 10 / 1e-9 is a whole number on paper, not in binary: the message must say what is really wrong
    with pytest.raises(ValidationError, match=r"has about 1e\+10 values .* use a larger step"):
        SweepSpec.model_validate(spec_data(grids=[sgd_grid(lr={"base": 2, "start": -10, "stop": 0, "step": 1e-9})]))


def test_one_grid_per_optimizer():
    assert error_locs(spec_data(grids=[sgd_grid(), sgd_grid(lr=[0.2])])) == [("grids",)]


def test_seeds_are_an_explicit_axis_without_duplicates():
    assert error_locs(spec_data(seeds=[])) == [("seeds",)]
    assert error_locs(spec_data(seeds=[1, 1])) == [("seeds",)]
    assert error_locs(spec_data(seeds=[-1])) == [("seeds", 0)]


def test_schedule_parameters_are_checked():
    assert error_locs(spec_data(schedule={"name": "step", "factor": 2.0})) == [("schedule", "step", "factor")]
    assert error_locs(spec_data(schedule={"name": "warm_restarts", "t_mult": 0.5})) == [
        ("schedule", "warm_restarts", "t_mult")
    ]
    spec = make_spec(schedule={"name": "step", "drop_epochs": [1, 2]})
    schedule = cells(spec)[0].config.as_dict()["schedule"]
    assert schedule == {"name": "step", "drop_epochs": [1.0, 2.0], "factor": 0.1}


def test_cell_cap_default_operator_limit_and_ceiling():
    big = {"base": 2, "start": 0, "stop": 99, "step": 1}  # 100 values
    data = spec_data(seeds=list(range(10)), grids=[{"optimizer": "sgd", "lr": big, "weight_decay": big}])
    assert DEFAULT_MAX_CELLS < 10 * 100 * 100 == MAX_CELLS_CEILING
    spec = SweepSpec.model_validate(data)  # within the ceiling: a valid spec
    with pytest.raises(SpecLimitError, match="WDGRID_MAX_CELLS") as caught:
        spec.check_limits(SpecLimits())
    assert caught.value.field == "grids"
    spec.check_limits(SpecLimits(max_cells=100_000))
    assert error_locs(spec_data(seeds=list(range(11)), grids=data["grids"])) == [("grids",)]  # over the ceiling


def test_a_huge_range_is_refused_before_it_is_expanded():
    huge = {"base": 2, "start": 0, "stop": 1, "step": 1e-12}
    assert error_locs(spec_data(grids=[sgd_grid(lr=huge)]))[0][:3] == ("grids", 0, "lr")


def test_epoch_cap():
    assert error_locs(spec_data(epochs=100_001)) == [("epochs",)]
    with pytest.raises(SpecLimitError, match="WDGRID_MAX_EPOCHS") as caught:
        make_spec(epochs=DEFAULT_MAX_EPOCHS + 1).check_limits(SpecLimits())
    assert caught.value.field == "epochs"
    make_spec(epochs=3000).check_limits(SpecLimits(max_epochs=3000))


# --- Axes -----------------------------------------------------------------------------------------------------------
def test_log_range_is_exact_and_inclusive():
    values = LogRange(base=2, start=-10, stop=0, step=0.5).values()
    assert len(values) == 21
    assert values == [2.0 ** (-10 + i / 2) for i in range(21)]
    assert values[0] == 2.0**-10 and values[-1] == 1.0
    assert LogRange(start=-4, stop=3, step=1, scale=0.001).values()[1] == 0.001 / 8


def test_decimal_steps_land_on_the_stop():
    values = LogRange(base=10, start=-4, stop=-3, step=0.1).values()
    assert len(values) == 11
    assert values[-1] == pytest.approx(1e-3, rel=1e-12)


# --- Identity -------------------------------------------------------------------------------------------------------
def test_list_and_equivalent_range_share_a_fingerprint():
    as_range = make_spec(grids=[sgd_grid(lr={"base": 2, "start": -3, "stop": 0, "step": 1})])
    as_list = make_spec(grids=[sgd_grid(lr=[1.0, 0.5, 0.25, 0.125])])
    assert as_range.fingerprint() == as_list.fingerprint()
    assert [c.cell_id for c in cells(as_range)] != []
    assert {c.cell_id for c in cells(as_range)} == {c.cell_id for c in cells(as_list)}


def test_presentation_and_order_do_not_change_the_fingerprint():
    base = make_spec()
    shuffled = spec_data(name="other", description="words", seeds=[1, 0])
    shuffled["grids"] = list(reversed(shuffled["grids"]))
    shuffled["grids"][1]["lr"] = [0.2, 0.05, 0.1]
    assert SweepSpec.model_validate(shuffled).fingerprint() == base.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"epochs": 4},
        {"batch_size": 64},
        {"seeds": [0, 2]},
        {"model": "cnn1d"},
        {"schedule": {"name": "fixed"}},
        {"weight_decay_units": "normalized"},
        {"precision": "bfloat16"},
        {"grids": [sgd_grid()]},
    ],
)
def test_what_trains_differently_changes_the_fingerprint(change):
    assert make_spec(**change).fingerprint() != make_spec().fingerprint()


def test_canonical_json_round_trips_floats_exactly():
    spec = make_spec(grids=[sgd_grid(lr=[0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308])])
    back = json.loads(canonical_json(spec.canonical()))
    assert back["grids"][0]["lr"] == sorted([0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308])


def test_fingerprint_and_cell_ids_are_stable_across_processes():
    spec = make_spec()
    code = (
        "from tests.factories import make_spec; from sweeps import cells; s = make_spec(); "
        "print(s.fingerprint(), *[c.cell_id for c in cells(s)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    ).stdout.split()
    assert out == [spec.fingerprint(), *[c.cell_id for c in cells(spec)]]
    # A golden value: a change here changes every stored sweep's identity, so it must be deliberate (version 4:
    # the trainer, its arguments and the objective joined the canonical form; a cell without a trainer kept its id).
    assert spec.fingerprint() == "22b3e2629cdb28ac22a1e959e7e810b3b390cb797db9e774bd05f1cdff7e4d08"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-40, 10), min_size=1, max_size=6, unique=True), st.randoms())
def test_fingerprint_ignores_axis_order(exponents, rnd):
    lrs = [2.0**e for e in exponents]
    shuffled = list(lrs)
    rnd.shuffle(shuffled)
    a, b = make_spec(grids=[sgd_grid(lr=lrs)]), make_spec(grids=[sgd_grid(lr=shuffled)])
    assert a.fingerprint() == b.fingerprint()


# --- Normalized weight decay ----------------------------------------------------------------------------------------
def test_normalized_weight_decay_matches_the_papers_cifar10_example():
    spec = make_spec(
        dataset="cifar10",
        model="resnet20",
        epochs=100,
        weight_decay_units="normalized",
        grids=[sgd_grid(weight_decay=[0.025])],
    )
    (cell, *_) = cells(spec)
    assert cell.weight_decay_given == 0.025
    assert cell.weight_decay == 0.025 * math.sqrt(128 / (50_000 * 100))  # ≈ 1.26e-4, as in the paper
    assert cell.config.weight_decay == cell.weight_decay


def test_normalization_with_warm_restarts_uses_the_first_period():
    spec = make_spec(
        weight_decay_units="normalized",
        schedule={"name": "warm_restarts", "t_0": 2, "t_mult": 2},
        grids=[sgd_grid(weight_decay=[0.05])],
    )
    assert cells(spec)[0].weight_decay == 0.05 * math.sqrt(128 / (4000 * 2))


# --- Cells, bundles, configs ----------------------------------------------------------------------------------------
def test_cells_cover_the_grid_with_unique_ids():
    spec = make_spec()
    got = cells(spec)
    assert len({c.cell_id for c in got}) == len(got) == 18
    assert {(c.optimizer, c.lr, c.weight_decay, c.seed) for c in got if c.optimizer == "sgd"} == {
        ("sgd", lr, wd, seed) for lr in (0.05, 0.1, 0.2) for wd in (0.0, 0.0005) for seed in (0, 1)
    }


def test_cell_ids_ignore_presentation_but_not_training():
    a, b = make_spec(), make_spec(name="renamed")
    assert [c.cell_id for c in cells(a)] == [c.cell_id for c in cells(b)]
    c = make_spec(epochs=4)
    assert not {x.cell_id for x in cells(a)} & {x.cell_id for x in cells(c)}


def test_bundles_group_by_optimizer_and_seed_and_split_deterministically():
    spec = make_spec()
    whole = bundles(spec)
    assert sorted((b.optimizer, b.seed, len(b.cells)) for b in whole) == [
        ("adamw", 0, 3),
        ("adamw", 1, 3),
        ("sgd", 0, 6),
        ("sgd", 1, 6),
    ]
    split = bundles(spec, max_size=4)
    assert sorted(len(b.cells) for b in split) == [2, 2, 3, 3, 4, 4]
    assert split == bundles(spec, max_size=4)
    assert {c for b in split for c in b.cells} == set(cells(spec))
    assert len({b.bundle_id for b in split}) == len(split)
    for b in split:
        assert [(c.lr, c.weight_decay) for c in b.cells] == sorted((c.lr, c.weight_decay) for c in b.cells)
    with pytest.raises(ValueError, match="max_size"):
        bundles(spec, max_size=0)


def test_training_config_is_the_flat_dict_the_worker_takes():
    spec = make_spec()
    cell = cells(spec)[0]
    assert cell.config.as_dict() == {
        "dataset": "mnist1d",
        "model": "mlp",
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 0.0,
        "schedule": {"name": "cosine"},
        "epochs": 3,
        "batch_size": 128,
        "seed": 0,
        "precision": "float32",
        "dataset_args": {},
        "model_args": {},
    }
    assert TrainingConfig.from_dict(cell.config.as_dict()) == cell.config
    assert cell.cell_id == cell.config.cell_id()  # where it trains (device, data directory) is not in the config


def test_two_configs_differing_only_in_precision_have_different_ids():
    (a, *_), (b, *_) = cells(make_spec()), cells(make_spec(precision="bfloat16"))
    assert a.config.as_dict() | {"precision": "bfloat16"} == b.config.as_dict()
    assert a.cell_id != b.cell_id


def test_training_config_refuses_unknown_keys_and_bad_values():
    base = cells(make_spec())[0].config.as_dict()
    with pytest.raises(ValueError, match="unknown config keys: device"):
        TrainingConfig.from_dict(base | {"device": "cpu"})
    for field, bad in [("epochs", 0), ("optimizer", "lion"), ("precision", "float16"), ("lr", math.nan)]:
        with pytest.raises(ValueError, match=rf"^{field} "):
            TrainingConfig.from_dict(base | {field: bad})


def test_normalized_weight_decay_formula_matches_the_papers_cifar10_example():
    assert normalized_weight_decay(0.025, 128, 50_000, 100) == pytest.approx(1.2649e-4, rel=1e-4)


def test_normalized_weight_decay_shrinks_with_longer_runs():
    assert normalized_weight_decay(0.05, 128, 50_000, 400) == pytest.approx(
        normalized_weight_decay(0.05, 128, 50_000, 100) / 2
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-0.1, 128, 50_000, 100), "lambda_norm"),
        ((0.1, 0, 50_000, 100), "batch_size"),
        ((0.1, 128, -5, 100), "n_train"),
        ((0.1, 128, 50_000, 0), "epochs"),
    ],
)
def test_normalized_weight_decay_rejects_bad_values(args, field):
    with pytest.raises(ValueError, match=rf"^{field}"):
        normalized_weight_decay(*args)


def test_a_range_past_every_float_is_refused_in_words():
    huge = {"base": 2, "start": -1.7976931348623157e308, "stop": 1.7976931348623157e308, "step": 5e-324}
    with pytest.raises(ValidationError, match="has more than 1e\\+308 values"):
        SweepSpec.model_validate(spec_data(grids=[sgd_grid(lr=huge)]))


def test_a_cells_time_limit_is_a_safeguard_outside_the_fingerprint():
    spec = make_spec(cell_time_limit_s=90.5)
    assert spec.fingerprint() == make_spec().fingerprint()
    assert cell_time_limit(spec.model_dump(mode="json")) == 90.5
    assert cell_time_limit(make_spec(epochs=3).model_dump(mode="json")) == 3 * 3600.0  # one hour per epoch
    for bad in (0, -1, 1e9, "60"):
        with pytest.raises(ValidationError) as caught:
            make_spec(cell_time_limit_s=bad)
        assert caught.value.errors()[0]["loc"] == ("cell_time_limit_s",)


@pytest.mark.parametrize("field", ["model_args", "dataset_args", "trainer_args"])
def test_plugin_arguments_are_bounded_in_size_since_every_cell_repeats_them(field: str):
    # 4 KB as JSON: every trial's stored config carries them, so 5000 cells stay about 20 MB.
    with pytest.raises(ValidationError) as error:
        SweepSpec.model_validate(spec_data(**{field: {"text": "x" * 5000}}))
    [e] = [e for e in error.value.errors() if e["type"] == "too_large"]
    assert e["loc"] == (field,) and "at most 4096" in e["msg"]
