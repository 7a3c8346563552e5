"""train_bundle(): K cells as one batched model give train()'s numbers per cell; divergence stays per cell."""

from __future__ import annotations

import io

import pytest
import torch

from workers.bundle import finished_cells, train_bundle
from workers.train import EpochMetrics, train

BASE = {
    "dataset": "mnist1d",
    "model": "cnn1d",
    "epochs": 2,
    "batch_size": 128,
    "seed": 0,
    "precision": "float64",
}
CELLS = {
    "sgd": [(0.02, 1e-4), (0.1, 1e-3), (0.5, 1e-2)],
    "sgdw": [(0.02, 1e-4), (0.1, 1e-3), (0.5, 1e-2)],
    "adam": [(1e-3, 1e-4), (3e-3, 1e-3), (1e-2, 0.0)],
    "adamw": [(1e-3, 1e-4), (3e-3, 1e-3), (1e-2, 1e-2)],
}


@pytest.mark.parametrize("optimizer", list(CELLS))
def test_batched_cells_equal_train_one_at_a_time_in_float64(optimizer):
    configs = [BASE | {"optimizer": optimizer, "lr": lr, "weight_decay": wd} for lr, wd in CELLS[optimizer]]
    seen: list[tuple[int, EpochMetrics]] = []
    bundle = train_bundle(configs, on_epoch=lambda i, m: seen.append((i, m)), batched=True)
    alone = [train(c) for c in configs]
    assert sorted((i, m.epoch) for i, m in seen) == [(i, e) for i in range(3) for e in (1, 2)]
    for b, a in zip(bundle, alone, strict=True):
        assert b.status == a.status == "completed"
        for mb, ma in zip(b.history, a.history, strict=True):
            # tolerance: batched kernels round differently; float64 agrees to ~1e-12
            assert mb.test_loss == pytest.approx(ma.test_loss, rel=1e-10, abs=1e-12)
            assert mb.train_loss == pytest.approx(ma.train_loss, rel=1e-10, abs=1e-12)
            assert mb.test_error == ma.test_error and mb.train_error == ma.train_error
    assert len({b.test_error for b in bundle}) > 1  # the cells really trained with different (α, λ)


@pytest.mark.parametrize(("dataset", "model"), [("mnist1d", "mlp"), ("digits", "digits_cnn")])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_built_in_batched_model_gives_each_cell_train_s_numbers(dataset, model, optimizer):
    from sweeps import TrainingConfig
    from workers.bundle import batchable
    from workers.train import load_data, resolve_device

    base = BASE | {"dataset": dataset, "model": model, "optimizer": optimizer}
    configs = [base | {"lr": lr, "weight_decay": wd} for lr, wd in CELLS[optimizer]]
    data = load_data(TrainingConfig.from_dict(configs[0]), resolve_device("cpu"))
    assert batchable(TrainingConfig.from_dict(configs[0]), data) == "explicit"  # so a CPU batches it by default
    bundle = train_bundle(configs, data=data)
    for b, a in zip(bundle, [train(c, data=data) for c in configs], strict=True):
        assert b.status == a.status == "completed"
        for mb, ma in zip(b.history, a.history, strict=True):
            assert mb.test_loss == pytest.approx(ma.test_loss, rel=1e-10, abs=1e-12)
            assert mb.train_loss == pytest.approx(ma.train_loss, rel=1e-10, abs=1e-12)
            assert mb.test_error == ma.test_error and mb.train_error == ma.train_error
    assert len({b.history[-1].test_loss for b in bundle}) == len(bundle)


def test_float32_cells_agree_to_single_precision():
    # float32 sums in another order batched (channels-last BatchNorm and convolutions) than alone, and training
    # amplifies the rounding with α: after two epochs ~1e-9 relative at α = 0.01, 3e-5 at 0.02, 2.5e-3 at 0.05 and
    # ~1 % at 0.2. (In float64 the numbers agree to 1e-10: the tests above.)
    configs = [
        BASE | {"precision": "float32", "optimizer": "sgdw", "lr": lr, "weight_decay": 1e-3} for lr in (0.02, 0.05)
    ]
    for b, a in zip(train_bundle(configs, batched=True), [train(c) for c in configs], strict=True):
        assert b.history[-1].test_loss == pytest.approx(a.history[-1].test_loss, rel=5e-3)


def test_a_diverging_cell_leaves_the_others_untouched():
    # α = 1e200 overflows float64 within the first epoch (α = 1e4 would only wander, finite, in float64)
    configs = [BASE | {"optimizer": "sgd", "lr": lr, "weight_decay": 1e-4} for lr in (0.05, 1e200, 0.2)]
    bundle = train_bundle(configs, batched=True)
    assert [r.status for r in bundle] == ["completed", "diverged", "completed"]
    assert bundle[1].diverged_at_epoch == 1 and bundle[1].history == []
    for i in (0, 2):
        alone = train(configs[i])
        assert bundle[i].history[-1].test_loss == pytest.approx(alone.history[-1].test_loss, rel=1e-10)


def test_models_that_cannot_be_batched_train_one_after_another(tmp_path):
    from tests.factories import write_cifar

    write_cifar(tmp_path, per_file=2, n_test=4)  # 10 training images: two steps of the 11.65M-parameter network
    base = BASE | {"dataset": "cifar10", "model": "shake_shake_26_2x64d", "epochs": 1, "batch_size": 5}
    configs = [base | {"optimizer": "adamw", "lr": lr, "weight_decay": 1e-3} for lr in (1e-3, 1e-2)]
    with pytest.raises(ValueError, match="cannot be batched"):
        train_bundle(configs, batched=True, data_dir=tmp_path)
    results = train_bundle(configs, data_dir=tmp_path)
    assert [r.status for r in results] == ["completed", "completed"]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_one_cell_chunk_and_train_give_bit_identical_numbers(precision):
    # One loop, one precision policy: how a cell was chunked never changes its numbers (the cell id promises that).
    config = BASE | {"precision": precision, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-3}
    alone = train(config)
    (chunk,) = train_bundle([config])
    (one_at_a_time, _) = train_bundle([config, config | {"lr": 1e-3}], batched=False)
    for r in (chunk, one_at_a_time):  # wall times differ; every number must not
        assert [(m.train_loss, m.train_error, m.test_loss, m.test_error, m.eta) for m in r.history] == [
            (m.train_loss, m.train_error, m.test_loss, m.test_error, m.eta) for m in alone.history
        ]


def test_cells_of_a_bundle_may_differ_only_in_lr_and_weight_decay():
    a = BASE | {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0}
    with pytest.raises(ValueError, match="'seed'"):
        train_bundle([a, a | {"seed": 1}])
    with pytest.raises(ValueError, match="'optimizer'"):
        train_bundle([a, a | {"optimizer": "sgdw"}])


def test_big_bundles_train_in_chunks_with_the_same_results(monkeypatch):
    from workers import bundle

    configs = [BASE | {"optimizer": "adamw", "lr": lr, "weight_decay": 1e-3} for lr in (1e-3, 2e-3, 4e-3)]
    whole = train_bundle(configs, batched=True)
    monkeypatch.setattr(bundle, "cpu_chunk", lambda config, data: 2)
    seen: list[int] = []
    chunked = train_bundle(configs, on_epoch=lambda i, m: seen.append(i), batched=True)
    assert seen == [0, 1, 0, 1, 2, 2]  # cells 0 and 1 for two epochs, then cell 2
    for w, c in zip(whole, chunked, strict=True):
        assert c.history[-1].test_loss == pytest.approx(w.history[-1].test_loss, rel=1e-12)


@pytest.mark.parametrize(("model", "batched"), [("cnn1d", True), ("mlp", False)])
def test_resume_from_a_bundle_checkpoint_ends_exactly_like_an_uninterrupted_run(model, batched):
    configs = [
        BASE
        | {"model": model, "epochs": 3, "precision": "float32", "optimizer": "adamw", "lr": lr, "weight_decay": 1e-3}
        for lr in (1e-3, 3e-3, 1e-2)
    ]
    full = train_bundle(configs, batched=batched)
    states: list[bytes] = []

    def keep(state):
        buffer = io.BytesIO()  # through bytes, as a checkpoint file would
        torch.save(state, buffer)
        states.append(buffer.getvalue())

    checkpointed = train_bundle(configs, batched=batched, on_checkpoint=keep)
    assert [[m.test_loss for m in r.history] for r in checkpointed] == [[m.test_loss for m in r.history] for r in full]
    # batched: a checkpoint per epoch and one when the chunk ends; one at a time: the same for each cell
    assert len(states) == (3 + 1 if batched else 3 * (3 + 1))
    # resume from the middle: batched mid-run, or one at a time with cell 0 finished and cell 1 in epoch 2 of 3
    middle = torch.load(io.BytesIO(states[1 if batched else 5]), weights_only=False)
    assert set(finished_cells(middle)) == (set() if batched else {0})
    resumed = train_bundle(configs, batched=batched, resume=middle)
    for r, f in zip(resumed, full, strict=True):
        assert r.status == f.status == "completed"
        assert [m.test_loss for m in r.history] == [m.test_loss for m in f.history]  # exactly, epochs 1..3
        assert r.history[-1].train_error == f.history[-1].train_error


def test_a_checkpoint_of_another_mode_is_refused():
    configs = [BASE | {"optimizer": "sgd", "lr": lr, "weight_decay": 1e-4} for lr in (0.05, 0.1)]
    states: list[dict[str, object]] = []
    train_bundle(configs, batched=True, on_checkpoint=lambda s: states.append({**s, "inner": None}))
    with pytest.raises(ValueError, match="batched, not sequential"):
        train_bundle(configs, batched=False, resume=states[0])


def test_a_model_can_set_its_own_cpu_chunk(monkeypatch):
    from sweeps import TrainingConfig
    from workers.bundle import CPU_CHUNK, cpu_chunk
    from workers.models import CNN1d
    from workers.train import load_data, resolve_device

    monkeypatch.setattr(CNN1d, "cpu_chunk", 4)  # cnn1d's own (measured: 16, as the default) set apart from it
    monkeypatch.setattr("workers.bundle._BATCHABLE", {})  # what this process has found out already

    data = load_data(
        TrainingConfig.from_dict(BASE | {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0}), resolve_device("cpu")
    )
    for model, chunk in (("cnn1d", 4), ("mlp", CPU_CHUNK)):  # cnn1d's own; mlp has none of its own
        assert (
            cpu_chunk(
                TrainingConfig.from_dict(BASE | {"model": model, "optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0}),
                data,
            )
            == chunk
        )
