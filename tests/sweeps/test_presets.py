"""Presets: every one valid and described, sized as it promises, and the paper's settings where it claims them."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from sweeps import (
    CosineScheduleSpec,
    Grid,
    StepScheduleSpec,
    SweepSpec,
    UnknownPresetError,
    bundles,
    cells,
    list_presets,
    load_preset,
)

PRESETS = {"smoke", "cpu-fig2", "paper-fig2", "paper-fig1-fixed", "paper-fig1-step", "paper-fig1-cosine"}

# cpu-fig2's budget: about 2.5 ms per cell-step on one core at batch 128, two cores, at most 10 minutes.
SECONDS_PER_CELL_STEP = 2.5e-3
CORES = 2


def test_every_preset_is_listed_valid_and_described():
    listed = {p.name: p.description for p in list_presets()}
    assert set(listed) == PRESETS
    for name, description in listed.items():
        spec = load_preset(name)
        assert spec.name == name
        assert len(description) > 40 and description == spec.description
        assert len({c.cell_id for c in cells(spec)}) == spec.n_cells()
        # The stored form (JSON) loads back to the same sweep.
        assert SweepSpec.model_validate_json(spec.model_dump_json()).fingerprint() == spec.fingerprint()


def test_unknown_preset_names_itself_and_the_known_ones():
    with pytest.raises(UnknownPresetError, match="'fig3'") as info:
        load_preset("fig3")
    assert set(info.value.known) == PRESETS


def test_overrides_replace_top_level_fields_and_are_validated():
    spec = load_preset("cpu-fig2", epochs=5, seeds=[7])
    assert (spec.epochs, spec.seeds) == (5, [7])
    assert spec.fingerprint() != load_preset("cpu-fig2").fingerprint()
    with pytest.raises(ValidationError) as info:
        load_preset("smoke", epochz=3)
    assert info.value.errors()[0]["loc"] == ("epochz",)


def test_smoke_is_a_handful_of_short_cells():
    spec = load_preset("smoke")
    assert spec.n_cells() <= 10 and spec.epochs <= 2 and len(spec.seeds) == 1
    assert (spec.dataset, spec.model) == ("mnist1d", "mlp")


def test_cpu_fig2_compares_all_four_optimizers_within_ten_minutes_on_two_cores():
    spec = load_preset("cpu-fig2")
    assert (spec.dataset, spec.model, spec.batch_size) == ("mnist1d", "cnn1d", 128)
    assert isinstance(spec.schedule, CosineScheduleSpec)
    assert len(spec.seeds) >= 2
    assert sorted(g.optimizer for g in spec.grids) == ["adam", "adamw", "sgd", "sgdw"]
    steps = spec.epochs * -(-4000 // spec.batch_size)
    assert spec.n_cells() * steps * SECONDS_PER_CELL_STEP / CORES <= 600
    grids: dict[str, Grid] = {g.optimizer: g for g in spec.grids}
    for name in ("sgd", "sgdw"):
        assert min(grids[name].lrs()) <= 2**-6 and max(grids[name].lrs()) >= 1.0
    for name in ("adam", "adamw"):  # measured: at 20 epochs Adam(W) underfits below 2^-10, is best near 2^-6..2^-5
        assert min(grids[name].lrs()) <= 2**-10 and max(grids[name].lrs()) >= 2**-4
    # Decoupled λ is per step and not scaled by α: its axis sits higher than the L2 variants'.
    assert max(grids["sgdw"].weight_decays()) > max(grids["sgd"].weight_decays())


def test_paper_fig2_holds_the_settings_the_paper_circles():
    spec = load_preset("paper-fig2")
    assert (spec.dataset, spec.model, spec.batch_size, spec.epochs) == ("cifar10", "shake_shake_26_2x64d", 128, 100)
    assert isinstance(spec.schedule, CosineScheduleSpec)
    grids = {g.optimizer: g for g in spec.grids}
    assert max(grids["sgd"].lrs()) == 1.0
    assert all(lr == 2.0 ** round(math.log2(lr)) for lr in grids["sgd"].lrs())
    points = {(c.optimizer, c.lr, c.weight_decay_given) for c in cells(spec)}
    assert ("sgd", 0.5, 0.001 / 8) in points
    assert ("sgdw", 1 / 1024, 0.001 / 4) in points
    assert 0.001 in grids["adamw"].lrs()


def test_paper_fig1_is_three_sweeps_with_one_grid_and_three_schedules():
    specs = [load_preset(f"paper-fig1-{s}") for s in ("fixed", "step", "cosine")]
    assert [s.schedule.name for s in specs] == ["fixed", "step", "cosine"]
    step = specs[1].schedule
    assert isinstance(step, StepScheduleSpec) and step.drop_epochs == [30, 60, 80]
    assert len({s.fingerprint() for s in specs}) == 3
    for s in specs:
        assert sorted(g.optimizer for g in s.grids) == ["adam", "adamw"]
        assert [g.model_dump() for g in s.grids] == [g.model_dump() for g in specs[0].grids]
        assert len(bundles(s)) == 2
