"""Schedule multipliers η_t: the paper's values at known points, and properties that hold for every setting."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.schedules import SCHEDULES, StepSchedule, WarmRestartsSchedule, make_schedule

epochs_st = st.integers(1, 200)
steps_st = st.integers(1, 50)


def etas(schedule, n_steps):
    return [schedule.multiplier(s) for s in range(n_steps)]


# --- Known values -------------------------------------------------------------------------------------------
def test_fixed_is_one_everywhere():
    s = make_schedule("fixed", epochs=3, steps_per_epoch=4)
    assert etas(s, 12) == [1.0] * 12


def test_step_drops_at_the_papers_epochs_30_60_80_of_100():
    s = make_schedule("step", epochs=100, steps_per_epoch=10)
    assert s.multiplier(299) == 1.0
    assert s.multiplier(300) == pytest.approx(0.1)
    assert s.multiplier(599) == pytest.approx(0.1)
    assert s.multiplier(600) == pytest.approx(0.01)
    assert s.multiplier(800) == pytest.approx(0.001)
    assert s.multiplier(999) == pytest.approx(0.001)


def test_step_default_drops_scale_with_the_run_length():
    s = make_schedule("step", epochs=10, steps_per_epoch=1)
    assert etas(s, 10) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_step_with_explicit_drops_and_factor():
    s = make_schedule("step", epochs=6, steps_per_epoch=2, drop_epochs=(4, 2), factor=0.5)
    assert isinstance(s, StepSchedule) and s.drop_epochs == (2.0, 4.0)
    assert etas(s, 12) == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]


def test_cosine_follows_half_a_cosine_per_batch():
    s = make_schedule("cosine", epochs=2, steps_per_epoch=4)
    assert s.multiplier(0) == 1.0
    assert s.multiplier(4) == pytest.approx(0.5)  # half way: t = 1 of T = 2
    assert s.multiplier(2) == pytest.approx(0.5 + 0.5 * math.cos(math.pi / 4))  # per batch, t = 0.5
    assert s.multiplier(8) == pytest.approx(0.0, abs=1e-15)


def test_warm_restarts_restart_at_t0_then_t0_times_tmult():
    s = make_schedule("warm_restarts", epochs=7, steps_per_epoch=4, t_0=1, t_mult=2)
    assert isinstance(s, WarmRestartsSchedule)
    assert s.restart_epochs() == [1.0, 3.0]
    assert s.multiplier(4) == 1.0 and s.multiplier(12) == 1.0  # restarts at epochs 1 and 3
    assert s.multiplier(2) == pytest.approx(0.5)  # middle of the first period (T_0 = 1)
    assert s.multiplier(8) == pytest.approx(0.5)  # middle of the second period (epochs 1..3)
    assert s.multiplier(20) == pytest.approx(0.5)  # middle of the third (epochs 3..7)
    assert s.multiplier(3) == pytest.approx(0.5 + 0.5 * math.cos(math.pi * 0.75))  # T_cur fractional per batch


# --- Properties ---------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(SCHEDULES), epochs=epochs_st, spe=steps_st)
def test_every_schedule_starts_at_one_and_stays_in_unit_interval(name, epochs, spe):
    s = make_schedule(name, epochs=epochs, steps_per_epoch=spe, t_0=max(1, epochs // 3))
    values = etas(s, epochs * spe)
    assert values[0] == 1.0
    assert all(0.0 <= v <= 1.0 for v in values)


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(["fixed", "step", "cosine"]), epochs=epochs_st, spe=steps_st)
def test_schedules_without_restarts_never_increase(name, epochs, spe):
    values = etas(make_schedule(name, epochs=epochs, steps_per_epoch=spe), epochs * spe)
    assert all(b <= a for a, b in itertools.pairwise(values))


@settings(max_examples=50, deadline=None)
@given(
    epochs=epochs_st,
    spe=steps_st,
    drops=st.lists(st.floats(0.1, 200.0), max_size=4),
    factor=st.floats(0.01, 1.0),
)
def test_step_takes_only_powers_of_its_factor(epochs, spe, drops, factor):
    s = make_schedule("step", epochs=epochs, steps_per_epoch=spe, drop_epochs=tuple(drops), factor=factor)
    allowed = [factor**k for k in range(len(drops) + 1)]
    assert all(any(math.isclose(v, a) for a in allowed) for v in etas(s, epochs * spe))


@settings(max_examples=50, deadline=None)
@given(epochs=epochs_st, spe=steps_st, t_0=st.integers(1, 20), t_mult=st.sampled_from([1, 2, 3]))
def test_warm_restarts_jump_to_one_at_each_restart_and_anneal_in_between(epochs, spe, t_0, t_mult):
    s = make_schedule("warm_restarts", epochs=epochs, steps_per_epoch=spe, t_0=t_0, t_mult=t_mult)
    assert isinstance(s, WarmRestartsSchedule)
    values = etas(s, epochs * spe)
    restart_steps = {round(e * spe) for e in s.restart_epochs()}
    for step in range(1, len(values)):
        if step in restart_steps:
            assert values[step] == 1.0
        else:
            assert values[step] <= values[step - 1]
    # with integer periods the number of restarts is what the geometric series says
    n, start, length = 0, t_0, t_0
    while start < epochs:
        n, length = n + 1, length * t_mult
        start += length
    assert len(restart_steps) == n


# --- Misuse -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "linear"}, "name"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": float("nan")}, "epochs"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"steps_per_epoch": 2.5}, "steps_per_epoch"),
        ({"name": "step", "factor": 1.5}, "factor"),
        ({"name": "step", "factor": 0}, "factor"),
        ({"name": "step", "drop_epochs": (10, -1)}, "drop_epochs"),
        ({"name": "warm_restarts", "t_0": 0}, "t_0"),
        ({"name": "warm_restarts", "t_mult": 0.5}, "t_mult"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, field):
    args = {"name": "cosine", "epochs": 10, "steps_per_epoch": 5} | kwargs
    with pytest.raises(ValueError, match=rf"^{field} "):
        make_schedule(args.pop("name"), **args)


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match=r"^step "):
        make_schedule("cosine", epochs=1, steps_per_epoch=1).multiplier(-1)
