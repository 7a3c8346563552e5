"""Plugins train like built-ins: the example package's model and data set through the one training loop, and the
check that decides whether a model's cells can train as one batched model — both ways."""

from __future__ import annotations

import pytest

from sweeps import TrainingConfig
from tests.factories import load_whole
from workers.bundle import batchable, train_bundle
from workers.train import train

BLOBS = {
    "dataset": "gaussian_blobs",
    "dataset_args": {"dims": 8},
    "model": "mlp",
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 1e-3,
    "epochs": 3,
    "batch_size": 128,
}
DIGITS = BLOBS | {"dataset": "digits", "dataset_args": {}, "model": "small_convnet", "model_args": {"width": 8}}


def test_a_data_set_plugin_returning_arrays_trains_and_learns():
    result = train(BLOBS)
    assert result.status == "completed" and result.test_error < 50.0  # 4 classes: chance is 75 %
    assert load_whole("gaussian_blobs", dims=8).x_train.shape == (2048, 8)


def test_a_model_plugin_with_arguments_trains_one_cell_and_a_bundle():
    one = train(DIGITS | {"epochs": 1})
    assert one.status == "completed" and len(one.history) == 1
    bundle = train_bundle([DIGITS | {"epochs": 1, "lr": lr} for lr in (1e-3, 3e-3)], batched=True)
    assert [r.status for r in bundle] == ["completed", "completed"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (BLOBS | {"model": "cnn1d", "dataset": "mnist1d", "dataset_args": {}}, "explicit"),  # its own batched_forward
        (BLOBS, "explicit"),  # the built-in mlp batches itself, on a plugin's data set too
        (DIGITS, "vmap"),  # a plugin's model: a pure function of weights and input
        (DIGITS | {"model_args": {"width": 8, "dropout": 0.5}}, "no"),  # random in its forward pass
    ],
)
def test_batchability_is_decided_by_a_check_on_the_model(config, expected):
    cfg = TrainingConfig.from_dict(config)
    assert batchable(cfg, load_whole(cfg.dataset, **cfg.dataset_args)) == expected


def test_a_model_that_fails_the_check_trains_its_cells_one_at_a_time(caplog):
    configs = [DIGITS | {"epochs": 1, "lr": lr, "model_args": {"width": 4, "dropout": 0.5}} for lr in (1e-3, 2e-3)]
    with pytest.raises(ValueError, match="cannot be batched"):
        train_bundle(configs, batched=True)
    with caplog.at_level("INFO", logger="workers.bundle"):
        results = train_bundle(configs)
    assert [r.status for r in results] == ["completed", "completed"]
    assert "one cell at a time" in caplog.text
