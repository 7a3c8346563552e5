"""Trainer plugins through real entry points: the example package's character-level language model
(``char_lm`` over ``python_source`` with ``char_transformer``) trains, reports its own metrics, checkpoints and
resumes to the same numbers; a non-finite report is a diverged cell; misuse of the context is one clear error. Data
sets returned as Datasets stream through a DataLoader to the same numbers as in memory."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from typing import Any

import pytest
import torch

from sweeps import TrainingConfig
from workers.bundle import train_bundle
from workers.run import EpochMetrics
from workers.train import train
from workers.trainer import SharedData, TrainerContext, TrainerError

LM: dict[str, Any] = {
    "dataset": "python_source",
    "dataset_args": {"chars": 12_000, "block": 16},
    "model": "char_transformer",
    "model_args": {"d_model": 16, "layers": 1, "heads": 2},
    "trainer": "char_lm",
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 1e-3,
    "epochs": 3,
    "batch_size": 64,
    "schedule": {"name": "cosine"},
}


def test_a_trainer_reports_its_own_metrics_every_epoch_with_the_schedules_eta():
    seen: list[EpochMetrics] = []
    result = train(LM, seen.append, device="cpu")
    assert result.status == "completed" and [m.epoch for m in result.history] == [1, 2, 3] and seen == result.history
    first, last = result.history[0], result.history[-1]
    assert set(last.extra) == {"val_loss", "val_bpc"} and last.extra["val_loss"] < first.extra["val_loss"]
    assert last.extra["val_bpc"] == pytest.approx(last.extra["val_loss"] / math.log(2))
    assert math.isnan(last.test_error) and math.isfinite(last.train_loss)  # not reported: NaN, not invented
    assert last.eta < first.eta < 1.0  # cosine: η_t of each epoch's last step, set through the context


def test_a_trainer_that_checkpoints_resumes_to_the_numbers_of_an_uninterrupted_run():
    states: list[dict[str, Any]] = []
    whole = train(LM, device="cpu", on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert [s["epoch"] for s in states] == [1, 2, 3]
    resumed = train(LM, device="cpu", resume=states[0])
    assert [m.extra for m in resumed.history] == [m.extra for m in whole.history]
    assert resumed.history[0].wall_time_s == whole.history[0].wall_time_s  # epoch 1 came from the checkpoint


def test_a_trainer_bundle_trains_cell_by_cell_and_resumes_after_a_finished_cell():
    configs = [LM | {"epochs": 1, "lr": lr} for lr in (1e-3, 3e-3)]
    states: list[dict[str, Any]] = []
    results = train_bundle(configs, device="cpu", on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert [r.status for r in results] == ["completed", "completed"]
    assert results[0].history[0].extra != results[1].history[0].extra  # each cell its own α
    after_first = next(s for s in states if s["inner"] is None and list(s["done"]) == [0])
    again = train_bundle(configs, device="cpu", resume=after_first)
    assert [r.history[0].extra for r in again] == [r.history[0].extra for r in results]
    with pytest.raises(ValueError, match="owns its loop"):
        train_bundle(configs, device="cpu", batched=True)


def test_a_non_finite_report_is_a_diverged_cell_with_the_epochs_before_it():
    result = train(LM | {"optimizer": "sgd", "lr": 1e12, "trainer_args": {"clip": 0}}, device="cpu")
    assert result.status == "diverged" and result.diverged_at_epoch == len(result.history) + 1


def _context(epochs: int = 2) -> TrainerContext:
    config = TrainingConfig.from_dict(LM | {"epochs": epochs})
    return TrainerContext(config, torch.device("cpu"), None, SharedData(), None, None, None)


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({}, "1 to 64 metrics"),
        ({f"m{i}": 1.0 for i in range(65)}, "1 to 64 metrics"),
        ({"val loss": 1.0}, "identifiers"),
        ({"val_loss": "low"}, "must be a number"),
        ({"val_loss": True}, "must be a number"),
    ],
)
def test_a_report_that_is_not_one_epoch_of_named_numbers_is_refused(report, message):
    with pytest.raises(TrainerError, match=message):
        _context().report(report)


def test_a_trainer_may_not_report_more_epochs_than_its_cell_has():
    ctx = _context(epochs=1)
    ctx.report({"val_loss": torch.tensor(2.5)})  # a one-element tensor is a number
    assert ctx.history[0].extra == {"val_loss": 2.5}
    with pytest.raises(TrainerError, match="more than the cell's 1 epochs"):
        ctx.report({"val_loss": 2.0})


def test_the_context_gives_the_papers_optimizer_and_the_schedules_eta():
    ctx = _context(epochs=2)
    model = torch.nn.Linear(2, 2)
    optimizer = ctx.make_optimizer(model.parameters())
    assert type(optimizer).__name__ == "PaperAdam" and optimizer.param_groups[0]["weight_decay"] == 1e-3
    assert ctx.set_eta(optimizer, 0, 4) == 1.0  # cosine over 2 epochs × 4 steps starts at 1
    eta = ctx.set_eta(optimizer, 4, 4)  # half way
    assert eta == pytest.approx(0.5) and optimizer.param_groups[0]["eta"] == eta
    with pytest.raises(TrainerError, match="steps_per_epoch"):
        ctx.set_eta(optimizer, 0, 0)


def test_a_data_set_streamed_from_datasets_trains_to_the_numbers_it_trains_to_in_memory():
    base = {
        "dataset": "gaussian_blobs",
        "model": "mlp",
        "optimizer": "sgdw",
        "lr": 0.05,
        "weight_decay": 1e-4,
        "epochs": 2,
        "batch_size": 100,
    }
    whole = train(base, device="cpu")
    streamed = train(base | {"dataset_args": {"stream": True}}, device="cpu")
    untimed = lambda history: [replace(m, wall_time_s=0.0) for m in history]  # noqa: E731
    assert untimed(streamed.history) == untimed(whole.history) and len(whole.history) == 2


def test_a_cell_past_its_time_limit_ends_timed_out_with_the_epochs_it_trained():
    slow = {
        "dataset": "mnist1d",
        "model": "mlp",
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "epochs": 10_000,
        "batch_size": 32,
    }
    started = time.monotonic()
    result = train(slow, device="cpu", time_limit_s=0.5)
    assert time.monotonic() - started < 30
    assert result.status == "timed_out" and result.error is not None and "0.5 s" in result.error
    assert len(result.history) < 10_000  # the epochs it finished in time (none on a busy machine) are kept
    lm = train(LM | {"epochs": 10_000}, device="cpu", time_limit_s=0.5)
    assert lm.status == "timed_out" and lm.error is not None and "time limit" in lm.error
