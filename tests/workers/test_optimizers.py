"""The paper's four optimizers: hand-computed steps, equivalences with torch.optim, and where they differ."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workers.optimizers import (
    OPTIMIZERS,
    make_optimizer,
    param_groups,
    set_eta,
)

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: (2e-5, 1e-6), torch.float64: (1e-12, 1e-14)}  # (rtol, atol)


def run_scalar(name, grads, etas, *, lr=0.1, wd=0.01, theta0=1.0, dtype=torch.float64):
    """Run ``name`` on a single scalar parameter with the given gradients and η_t per step; θ after each step."""
    p = torch.tensor([theta0], dtype=dtype, requires_grad=True)
    opt = make_optimizer(name, [p], lr=lr, weight_decay=wd)
    out = []
    for g, eta in zip(grads, etas, strict=True):
        p.grad = torch.tensor([g], dtype=dtype)
        set_eta(opt, eta)
        opt.step()
        out.append(p.item())
    return out


def reference(name, theta0, grads, etas, *, lr, wd, momentum=0.9, betas=(0.9, 0.999), eps=1e-8):
    """Algorithms 1 and 2 transcribed line by line from the paper, on one Python float."""
    theta, m, v = theta0, 0.0, 0.0
    decoupled = name.endswith("w")
    for t, (grad, eta) in enumerate(zip(grads, etas, strict=True), start=1):
        g = grad if decoupled else grad + wd * theta
        if name.startswith("sgd"):
            m = momentum * m + eta * lr * g
            theta = theta - m - (eta * wd * theta if decoupled else 0.0)
        else:
            m = betas[0] * m + (1 - betas[0]) * g
            v = betas[1] * v + (1 - betas[1]) * g * g
            m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
            theta = theta - eta * (lr * m_hat / (math.sqrt(v_hat) + eps) + (wd * theta if decoupled else 0.0))
    return theta


# --- Hand-computed steps: α = 0.1, λ = 0.01, θ0 = 1, gradients 2 then −1, η_t = 1 then 0.5 ---------------------
HAND = {
    # sgd:  g = 2.01, m = 0.201, θ = 0.799; g = −1 + 0.00799, m = 0.9·0.201 + 0.05·g = 0.1312995, θ = 0.6677005
    "sgd": (0.799, 0.6677005),
    # sgdw: m = 0.2, θ = 1 − 0.2 − 0.01 = 0.79; m = 0.18 − 0.05 = 0.13, θ = 0.79 − 0.13 − 0.005·0.79 = 0.65605
    "sgdw": (0.79, 0.65605),
    # adam/adamw: exact decimal arithmetic of Algorithm 2 (40 digits), rounded.
    "adam": (0.9000000004975124, 0.8864135917656712),
    "adamw": (0.8900000004999999, 0.8722331485987157),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_hand_computed_one_and_two_steps(name):
    first, second = run_scalar(name, [2.0, -1.0], [1.0, 0.5])
    assert first == pytest.approx(HAND[name][0], rel=1e-14, abs=1e-15)
    assert second == pytest.approx(HAND[name][1], rel=1e-14, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(OPTIMIZERS),
    lr=st.floats(1e-4, 1.0),
    wd=st.floats(0.0, 0.1),
    theta0=st.floats(-3.0, 3.0),
    steps=st.lists(st.tuples(st.floats(-5.0, 5.0), st.floats(0.0, 1.0)), min_size=1, max_size=8),
)
def test_foreach_implementation_matches_the_paper_line_by_line(name, lr, wd, theta0, steps):
    grads, etas = [g for g, _ in steps], [e for _, e in steps]
    got = run_scalar(name, grads, etas, lr=lr, wd=wd, theta0=theta0)[-1]
    want = reference(name, theta0, grads, etas, lr=lr, wd=wd)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


# --- Equivalences with torch.optim at constant η --------------------------------------------------------------
def twin_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 4), (4,), (3, 2, 3, 3), (1,)]
    ours = [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return ours, theirs, gen


def drive(ours_opt, theirs_opt, ours, theirs, gen, *, steps=15, etas=None, lr_of_eta=None):
    """Feed both optimizers the same random gradients; ``etas`` sets η_t on ours and lr = lr_of_eta(η_t) on theirs."""
    for t in range(steps):
        for p, q in zip(ours, theirs, strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad, q.grad = g.clone(), g.clone()
        if etas is not None:
            assert lr_of_eta is not None
            set_eta(ours_opt, etas[t])
            for group in theirs_opt.param_groups:
                group["lr"] = lr_of_eta(etas[t])
        ours_opt.step()
        theirs_opt.step()


def assert_close(ours, theirs, dtype):
    for p, q in zip(ours, theirs, strict=True):
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_sgd_equals_torch_sgd_at_constant_eta(dtype, eta):
    ours, theirs, gen = twin_params(dtype)
    lr, wd = 0.05, 5e-3
    ours_opt = make_optimizer("sgd", ours, lr=lr, weight_decay=wd)
    theirs_opt = torch.optim.SGD(theirs, lr=lr * eta, momentum=0.9, weight_decay=wd, foreach=True)
    drive(ours_opt, theirs_opt, ours, theirs, gen, etas=[eta] * 15, lr_of_eta=lambda e: lr * e)
    assert_close(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_adam_equals_torch_adam_at_constant_eta(dtype, eta):
    ours, theirs, gen = twin_params(dtype)
    lr, wd = 1e-3, 5e-2
    ours_opt = make_optimizer("adam", ours, lr=lr, weight_decay=wd)
    theirs_opt = torch.optim.Adam(theirs, lr=lr * eta, weight_decay=wd, foreach=True)
    drive(ours_opt, theirs_opt, ours, theirs, gen, etas=[eta] * 15, lr_of_eta=lambda e: lr * e)
    assert_close(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_equals_torch_adamw_with_decay_divided_by_alpha(dtype):
    ours, theirs, gen = twin_params(dtype)
    lr, wd = 1e-3, 2.5e-4
    ours_opt = make_optimizer("adamw", ours, lr=lr, weight_decay=wd)
    theirs_opt = torch.optim.AdamW(theirs, lr=lr, weight_decay=wd / lr, foreach=True)
    drive(ours_opt, theirs_opt, ours, theirs, gen)
    assert_close(ours, theirs, dtype)


# --- Where they differ --------------------------------------------------------------------------------------
def test_sgd_differs_from_torch_once_eta_changes_because_eta_sits_inside_the_buffer():
    """α = 0.1, β1 = 0.9, λ = 0, gradients 1 then 1, η_t = 1 then 0.5.

    Paper:  m1 = 0.1,  m2 = 0.9·0.1 + 0.5·0.1·1 = 0.14           → θ2 = 1 − 0.1 − 0.14 = 0.76
    torch (lr = α·η_t):  buf2 = 0.9·1 + 1 = 1.9, step = 0.05·1.9 = 0.095 → θ2 = 1 − 0.1 − 0.095 = 0.805
    torch shrinks the whole momentum history when η drops; the paper only scales the new gradient.
    """
    ours = run_scalar("sgd", [1.0, 1.0], [1.0, 0.5], wd=0.0)
    q = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([q], lr=0.1, momentum=0.9)
    for eta in (1.0, 0.5):
        q.grad = torch.ones_like(q)
        opt.param_groups[0]["lr"] = 0.1 * eta
        opt.step()
    assert ours[0] == pytest.approx(0.9) and q.item() == pytest.approx(0.805)
    assert ours[1] == pytest.approx(0.76)
    assert ours[1] != pytest.approx(q.item(), abs=1e-3)


@pytest.mark.parametrize("name", ["sgdw", "adamw"])
@pytest.mark.parametrize("lr", [1e-3, 1e-1])
def test_decoupled_decay_is_scaled_by_eta_and_not_by_alpha(name, lr):
    """With zero gradients, one step shrinks θ by exactly (1 − η_t·λ), whatever α is."""
    p = torch.full((3,), 2.0, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(name, [p], lr=lr, weight_decay=0.01)
    set_eta(opt, 0.5)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert p.detach().tolist() == pytest.approx([2.0 * (1 - 0.5 * 0.01)] * 3, rel=1e-15)


def test_torch_adamw_with_a_plain_lambda_decays_alpha_times_more():
    """torch.optim.AdamW(weight_decay=λ) decays by α·λ per step: the coupling the paper removes."""
    lr, wd = 1e-3, 0.01
    ours = run_scalar("adamw", [0.0], [1.0], lr=lr, wd=wd, theta0=2.0)[0]
    q = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([q], lr=lr, weight_decay=wd)
    q.grad = torch.zeros_like(q)
    opt.step()
    assert ours == pytest.approx(2.0 * (1 - wd))
    assert q.item() == pytest.approx(2.0 * (1 - lr * wd))


def test_l2_in_adam_regularizes_weights_with_large_gradients_less():
    """Prop. 2 of the paper: Adam's L2 term is divided by √v̂, so a weight with a large gradient history is barely
    decayed, while AdamW decays both weights by the same η_t·λ. Gradients alternate in sign (±100 and ±0.01) and do
    not depend on θ, so the gap between a run with decay and one without is the decay's effect alone."""

    def decay_effect(name):
        with_decay = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
        without = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
        opts = [
            make_optimizer(name, [with_decay], lr=1e-2, weight_decay=1e-3),
            make_optimizer(name, [without], lr=1e-2, weight_decay=0.0),
        ]
        for t in range(20):
            sign = 1.0 if t % 2 == 0 else -1.0
            with_decay.grad = torch.tensor([100.0 * sign, 0.01 * sign], dtype=torch.float64)
            without.grad = with_decay.grad.clone()
            for opt in opts:
                opt.step()
        return (without - with_decay).detach().tolist()

    l2, decoupled = decay_effect("adam"), decay_effect("adamw")
    assert 0 < l2[0] < 1e-3 * l2[1]  # large-gradient weight: almost no regularization under L2
    assert decoupled[0] > 0
    assert decoupled[0] == pytest.approx(decoupled[1], rel=1e-6)  # equal up to θ's own tiny Adam drift


# --- Param groups, η, state ---------------------------------------------------------------------------------
def test_param_groups_can_exempt_biases_and_norms_from_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    groups = param_groups(model, decay_all=False)
    assert [len(g["params"]) for g in groups] == [1, 3]  # Linear weight | Linear bias, BN weight, BN bias
    opt = make_optimizer("adamw", groups, lr=1e-3, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = list(model.parameters())
    torch.testing.assert_close(after[0].detach(), before[0] * 0.9)  # decayed
    for b, a in zip(before[1:], after[1:], strict=True):
        torch.testing.assert_close(a.detach(), b)  # exempt


def test_param_groups_default_decays_everything_like_the_paper():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert [len(g["params"]) for g in param_groups(model)] == [4]


def test_every_group_carries_eta():
    model = nn.Linear(2, 2)
    for name in OPTIMIZERS:
        opt = make_optimizer(name, param_groups(model, decay_all=False), lr=0.1, weight_decay=0.0)
        assert [g["eta"] for g in opt.param_groups] == [1.0, 1.0]
        set_eta(opt, 0.25)
        assert [g["eta"] for g in opt.param_groups] == [0.25, 0.25]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_identically(name):
    torch.manual_seed(1)
    a = nn.Linear(5, 3)
    b = nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a = make_optimizer(name, a.parameters(), lr=1e-2, weight_decay=1e-3)
    x = torch.randn(8, 5)
    for step in range(6):
        if step == 3:  # checkpoint a through bytes, as a checkpoint file would, and restore into a fresh b
            buffer = io.BytesIO()
            torch.save({"model": a.state_dict(), "optimizer": opt_a.state_dict()}, buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer)
            b.load_state_dict(checkpoint["model"])
            opt_b = make_optimizer(name, b.parameters(), lr=1e-2, weight_decay=1e-3)
            opt_b.load_state_dict(checkpoint["optimizer"])
        for model, opt in [(a, opt_a)] + ([(b, opt_b)] if step >= 3 else []):
            opt.zero_grad()
            model(x).square().sum().backward()
            set_eta(opt, 1 - step / 6)
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_parameters_without_gradients_are_left_alone():
    p = torch.ones(2, requires_grad=True)
    q = torch.ones(2, requires_grad=True)
    opt = make_optimizer("adamw", [p, q], lr=0.1, weight_decay=0.1)
    p.grad = torch.ones(2)
    opt.step()
    assert torch.equal(q.detach(), torch.ones(2)) and q not in opt.state


def test_closure_loss_is_returned():
    p = torch.ones(1, requires_grad=True)
    opt = make_optimizer("sgd", [p], lr=0.1, weight_decay=0.0)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return float(loss.detach())

    assert opt.step(closure) == 1.0
    assert p.item() == pytest.approx(0.8)


# --- Misuse -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "lamb"}, "name"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"momentum": -0.9}, "momentum"),
        ({"momentum": 1.0}, "momentum"),
        ({"name": "adam", "betas": (-0.1, 0.999)}, "betas[0]"),
        ({"name": "adam", "betas": (0.9, 1.5)}, "betas[1]"),
        ({"name": "adam", "eps": -1e-8}, "eps"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, field):
    args = {"name": "sgd", "lr": 0.1, "weight_decay": 0.0} | kwargs
    name = args.pop("name")
    with pytest.raises(ValueError, match=r"^" + re.escape(field) + " "):
        make_optimizer(name, [torch.ones(1, requires_grad=True)], **args)


def test_a_group_with_negative_decay_is_rejected():
    with pytest.raises(ValueError, match=r"^weight_decay"):
        make_optimizer(
            "sgdw",
            [{"params": [torch.ones(1, requires_grad=True)], "weight_decay": -1}],
            lr=0.1,
            weight_decay=0,
        )


def test_negative_eta_is_rejected_by_set_eta_and_at_step_time():
    p = torch.ones(1, requires_grad=True)
    opt = make_optimizer("sgdw", [p], lr=0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"^eta"):
        set_eta(opt, -0.5)
    opt.param_groups[0]["eta"] = float("nan")
    p.grad = torch.ones(1)
    with pytest.raises(ValueError, match=r"^eta"):
        opt.step()
    assert p.item() == 1.0


# --- Normalized weight decay --------------------------------------------------------------------------------
