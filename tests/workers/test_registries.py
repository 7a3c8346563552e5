"""A sweep can name exactly what the worker registers, and a spec's cells train as the worker expects."""

from __future__ import annotations

import sweeps
from workers.data import DATASETS
from workers.models import MODELS
from workers.optimizers import OPTIMIZERS


def test_spec_names_are_the_worker_registries():
    assert set(sweeps.DATASETS) == set(DATASETS)
    assert set(sweeps.MODELS) == set(MODELS)
    assert set(sweeps.OPTIMIZERS) == set(OPTIMIZERS)


def test_every_cell_of_every_preset_is_a_valid_training_config():
    for preset in sweeps.list_presets():
        spec = sweeps.load_preset(preset.name)
        for cell in sweeps.cells(spec):
            config = sweeps.TrainingConfig.from_dict(cell.config.as_dict())  # as the store hands it to a worker
            assert config == cell.config and config.cell_id() == cell.cell_id


def test_normalized_decay_uses_the_training_set_size_the_loader_produces():
    from workers.data import load_dataset

    for name in ("mnist1d", "digits"):
        assert load_dataset(name).n_train == sweeps.N_TRAIN[name]


def test_epoch_metrics_of_the_worker_are_what_the_store_records():
    from dataclasses import asdict, fields

    import results
    from workers.train import EpochMetrics

    stored = [f.name for f in fields(results.EpochRecord) if f.name not in ("trial_id", "attempt")]
    assert [f.name for f in fields(EpochMetrics)] == stored
    m = EpochMetrics(3, 0.5, 12.5, 0.6, 14.0, 0.25, 1.5)
    assert results.EpochRecord(trial_id=1, attempt=1, **asdict(m)).test_error == 14.0
