"""The model registry: sizes of the paper's networks, shapes, and Shake-Shake's forward/backward mixing."""

from __future__ import annotations

import pytest
import torch

from sweeps import PluginError
from workers.models import MODELS, build_model, count_parameters, shake

SHAPES = {
    "mlp": (40,),
    "cnn1d": (40,),
    "digits_cnn": (1, 8, 8),
    "resnet20": (3, 32, 32),
    "shake_shake_26_2x64d": (3, 32, 32),
    "shake_shake_26_2x96d": (3, 32, 32),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("shake_shake_26_2x64d", 11.65e6),  # the paper's 11.6M
        ("shake_shake_26_2x96d", 26.2e6),  # Gastaldi's count (the AdamW paper prints 25.6M)
        ("resnet20", 0.27e6),  # He et al.: 0.27M
    ],
)
def test_parameter_counts_match_the_papers(name, expected):
    n = count_parameters(build_model(name, (3, 32, 32), 10))
    assert abs(n - expected) / expected < 0.01, n


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_maps_a_batch_to_class_logits(name):
    torch.manual_seed(0)
    model = build_model(name, SHAPES[name], 10)
    out = model(torch.randn(3, *SHAPES[name]))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_same_seed_same_initialization():
    torch.manual_seed(3)
    a = build_model("cnn1d", (40,), 10)
    torch.manual_seed(3)
    b = build_model("cnn1d", (40,), 10)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_shake_mixes_forward_and_backward_with_independent_coefficients_per_image():
    torch.manual_seed(0)
    a = torch.randn(64, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(64, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    out = shake(a, b, training=True)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    alpha = ((out - b) / (a - b)).detach()  # forward coefficient per element
    beta = a.grad
    # one coefficient per image, in [0, 1], shared by every element of that image
    for coef in (alpha, beta):
        per_image = coef.flatten(1)
        assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image))
        assert ((per_image >= 0) & (per_image <= 1)).all()
    torch.testing.assert_close(a.grad + b.grad, torch.ones_like(a))  # backward: β·a + (1 − β)·b
    assert not torch.allclose(alpha.flatten(1)[:, 0], beta.flatten(1)[:, 0])  # independent draws
    assert alpha.flatten(1)[:, 0].std() > 0.1  # a different draw for every image


def test_shake_averages_at_test_time():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(shake(a, b, training=False), (a + b) / 2)


def test_shake_shake_eval_is_deterministic_and_training_is_not():
    torch.manual_seed(0)
    model = build_model("shake_shake_26_2x64d", (3, 32, 32), 10)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_an_unknown_model_is_an_error_naming_the_field_and_what_is_installed():
    with pytest.raises(
        PluginError, match=r"no model named 'vgg16' is installed; installed: char_transformer, cnn1d, "
    ) as caught:
        build_model("vgg16", (3, 32, 32), 10)
    assert caught.value.field == "model"
