"""train(): real training on tiny data — learning, determinism, resume, divergence, and the per-epoch contract."""

from __future__ import annotations

import io
import math

import pytest
import torch

from sweeps import TrainingConfig
from tests.factories import write_cifar
from workers.train import EpochMetrics, StopTraining, train

BASE = {
    "dataset": "mnist1d",
    "model": "cnn1d",
    "optimizer": "sgdw",
    "lr": 0.1,
    "weight_decay": 5e-4,
    "epochs": 4,
    "batch_size": 128,
    "seed": 0,
}


def test_cnn1d_learns_mnist1d_and_reports_every_epoch():
    seen: list[EpochMetrics] = []
    result = train(BASE, on_epoch=seen.append)
    assert result.status == "completed"
    assert [m.epoch for m in seen] == [1, 2, 3, 4] == [m.epoch for m in result.history]
    assert result.test_error < 30.0  # chance is 90 %
    for m in seen:
        assert 0.0 <= m.test_error <= 100.0 and 0.0 <= m.train_error <= 100.0
        assert m.train_loss > 0 and m.test_loss > 0
    assert [m.wall_time_s for m in seen] == sorted(m.wall_time_s for m in seen)
    # cosine: η of each epoch's last step, 32 steps per epoch (4000 / 128, last batch of 32 kept)
    assert seen[1].eta == pytest.approx(0.5 + 0.5 * math.cos(math.pi * 63 / 128))
    assert result.device == "cpu"


def test_same_seed_gives_identical_numbers_and_another_seed_does_not():
    a, b = train(BASE), train(BASE)
    assert [m.test_loss for m in a.history] == [m.test_loss for m in b.history]
    assert [m.train_loss for m in a.history] == [m.train_loss for m in b.history]
    c = train(BASE | {"seed": 1})
    assert [m.test_loss for m in c.history] != [m.test_loss for m in a.history]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_from_an_epoch_checkpoint_ends_exactly_like_an_uninterrupted_run(optimizer):
    config = BASE | {"optimizer": optimizer, "lr": 0.05 if optimizer == "sgd" else 3e-3, "epochs": 5}
    full = train(config)
    saved = {}

    def keep_epoch_2(state):
        if state["epoch"] == 2:
            buffer = io.BytesIO()  # through bytes, as a checkpoint file would
            torch.save(state, buffer)
            saved["bytes"] = buffer.getvalue()
            raise StopTraining

    stopped = train(config, on_checkpoint=keep_epoch_2)
    assert stopped.status == "stopped" and len(stopped.history) == 2
    state = torch.load(io.BytesIO(saved["bytes"]), weights_only=False)
    resumed = train(config, resume=state)
    assert resumed.status == "completed"
    assert [m.test_loss for m in resumed.history] == [m.test_loss for m in full.history]
    assert resumed.history[-1].train_loss == full.history[-1].train_loss


def test_divergence_is_a_result_that_keeps_the_last_measured_epoch():
    # α = 10⁴ blows up within the first epoch, so no epoch is ever measured
    result = train(BASE | {"optimizer": "sgd", "lr": 1e4, "epochs": 3})
    assert result.status == "diverged"
    assert result.diverged_at_epoch == 1
    assert result.history == [] and math.isnan(result.test_error)


def test_divergence_after_some_epochs_keeps_their_metrics():
    epochs_seen: list[EpochMetrics] = []

    def blow_up_after_two(state):
        if state["epoch"] == 2:
            with torch.no_grad():
                for tensor in state["weights"].values():
                    if tensor.is_floating_point():
                        tensor.fill_(float("nan"))  # state_dict shares the live weights: the next loss is NaN

    result = train(BASE, on_epoch=epochs_seen.append, on_checkpoint=blow_up_after_two)
    assert result.status == "diverged" and result.diverged_at_epoch == 3
    assert [m.epoch for m in result.history] == [1, 2] == [m.epoch for m in epochs_seen]
    assert result.test_error == epochs_seen[-1].test_error


def test_float64_runs_end_to_end():
    result = train(BASE | {"precision": "float64", "epochs": 1, "model": "mlp", "optimizer": "adam", "lr": 1e-3})
    assert result.status == "completed" and len(result.history) == 1


def test_images_train_with_augmentation_through_the_cifar_loader(tmp_path):
    write_cifar(tmp_path)
    result = train(BASE | {"dataset": "cifar10", "model": "resnet20", "epochs": 1, "batch_size": 16}, data_dir=tmp_path)
    assert result.status == "completed" and len(result.history) == 1


def test_every_schedule_runs_and_reports_its_eta():
    for schedule, last_eta in [
        ({"name": "fixed"}, 1.0),
        ({"name": "step", "drop_epochs": [1], "factor": 0.5}, 0.5),
        ({"name": "warm_restarts", "t_0": 1, "t_mult": 1}, 0.5 + 0.5 * math.cos(math.pi * 31 / 32)),
    ]:
        result = train(BASE | {"epochs": 2, "schedule": schedule, "model": "mlp"})
        assert result.history[-1].eta == pytest.approx(last_eta)


def test_unknown_config_keys_and_bad_values_are_rejected():
    with pytest.raises(ValueError, match="unknown config keys: learning_rate"):
        train(BASE | {"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"^epochs "):
        TrainingConfig.from_dict(BASE | {"epochs": 0})
    with pytest.raises(ValueError, match=r"^optimizer "):
        TrainingConfig.from_dict(BASE | {"optimizer": "lion"})
    with pytest.raises(ValueError, match=r"^lr "):
        train(BASE | {"lr": -1.0})
