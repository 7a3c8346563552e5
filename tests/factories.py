"""Test factories: small valid specs and metrics that a test then bends, and tiny data sets written in the real
on-disk formats (read back through the real loaders)."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from results import EpochRecord, FinalMetrics, Storage, SweepRecord, TrialRecord
from sweeps import SweepSpec, expand
from workers.data import DeviceData, load_dataset

_SPEC: dict[str, Any] = {
    "name": "test sweep",
    "description": "a tiny spec for tests",
    "dataset": "mnist1d",
    "model": "mlp",
    "epochs": 3,
    "batch_size": 128,
    "schedule": {"name": "cosine"},
    "weight_decay_units": "raw",
    "seeds": [0, 1],
    "grids": [
        {"optimizer": "sgd", "lr": [0.05, 0.1, 0.2], "weight_decay": [0.0, 0.0005]},
        {"optimizer": "adamw", "lr": {"base": 2, "start": -10, "stop": -9, "step": 0.5}, "weight_decay": [0.001]},
    ],
}


def spec_data(**overrides: Any) -> dict[str, Any]:
    """The raw JSON-like data of a valid spec (2 seeds; sgd 3×2 and adamw 3×1 grids: 18 cells), top-level keys
    replaced by ``overrides``."""
    return {**copy.deepcopy(_SPEC), **overrides}


def make_spec(**overrides: Any) -> SweepSpec:
    """A validated :func:`spec_data` spec."""
    return SweepSpec.model_validate(spec_data(**overrides))


def epoch_record(trial_id: int, attempt: int, epoch: int, **overrides: Any) -> EpochRecord:
    """Plausible metrics of one epoch of a trial's attempt: losses and errors (percent) falling with the epoch."""
    values: dict[str, Any] = {
        "train_loss": 2.0 / epoch,
        "train_error": 50.0 / epoch,
        "test_loss": 2.2 / epoch,
        "test_error": 55.0 / epoch,
        "eta": 0.5,
        "wall_time_s": 0.25 * epoch,
    }
    return EpochRecord(trial_id=trial_id, attempt=attempt, epoch=epoch, **{**values, **overrides})


def write_cifar(root: Path, *, n_classes: int = 10, per_file: int = 8, n_test: int = 10, seed: int = 0) -> Path:
    """CIFAR-10 (``cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta) or CIFAR-100
    (``cifar-100-python``: train, test, meta) pickles with random images; returns the folder."""
    rng = np.random.default_rng(seed)

    def batch(n: int, label_key: str) -> dict[str, object]:
        return {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            label_key: rng.integers(0, n_classes, size=n).tolist(),
        }

    if n_classes == 10:
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(per_file, "labels") for i in range(1, 6)}
        files["test_batch"] = batch(n_test, "labels")
        files["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
    else:
        folder = root / "cifar-100-python"
        files = {"train": batch(5 * per_file, "fine_labels"), "test": batch(n_test, "fine_labels")}
        files["meta"] = {"fine_label_names": [f"class{i}" for i in range(100)]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with (folder / name).open("wb") as f:
            pickle.dump(content, f)
    return folder


def write_imagenet32(root: Path, *, per_file: int = 4, n_val: int = 6, seed: int = 0) -> Path:
    """Downsampled-ImageNet 32×32 pickles (train_data_batch_1..10, val_data) with 1-based labels."""
    rng = np.random.default_rng(seed)
    folder = root / "imagenet32"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [*((f"train_data_batch_{i}", per_file) for i in range(1, 11)), ("val_data", n_val)]:
        content = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": rng.integers(1, 1001, size=n).tolist(),
            "mean": np.zeros(3072),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(content, f)
    return folder


def fill_sweep(
    store: Storage,
    spec: SweepSpec,
    error_of: Callable[[TrialRecord], float | None],
    *,
    epochs: int = 3,
    running: Callable[[TrialRecord], bool] | None = None,
) -> SweepRecord:
    """Create ``spec``'s sweep in ``store`` and run every trial through the real store API: claim it, record
    ``epochs`` epochs whose test error falls to ``error_of(trial)`` (percent), then finish it completed with that
    error, or diverged (inf loss, no error) where ``error_of`` returns None. Trials for which ``running`` says True
    are claimed and left running (a sweep in progress)."""
    sweep = store.create_sweep(expand(spec))
    while (t := store.claim_trial(sweep.id, lease_seconds=60)) is not None:
        if running is not None and running(t):
            continue
        error = error_of(t)
        if error is None:
            store.record_epochs([epoch_record(t.id, 1, 1, train_loss=math.inf, test_error=90.0)])
            store.finish_trial(t.id, 1, "diverged", final=FinalMetrics(train_loss=math.inf, epochs_done=1))
            continue
        store.record_epochs(
            [epoch_record(t.id, 1, e, test_error=error + 10.0 * (epochs - e) / epochs) for e in range(1, epochs + 1)]
        )
        store.finish_trial(t.id, 1, "completed", final=FinalMetrics(test_error=error, epochs_done=epochs))
    return store.get_sweep(sweep.id)


def write_idx(folder: Path, *, n_train: int = 12, n_test: int = 6, seed: int = 0) -> Path:
    """torchvision's MNIST-family files, unpacked, in the real idx format: ``{train,t10k}-images-idx3-ubyte``
    (magic 2051, N, 28, 28, uint8 pixels) and ``{train,t10k}-labels-idx1-ubyte`` (magic 2049, N, uint8 labels)."""
    import struct

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return folder


def write_svhn(folder: Path, *, n_train: int = 10, n_test: int = 5, seed: int = 0) -> Path:
    """SVHN's cropped-digit release in its real format: ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB files
    with ``X`` 32×32×3×N uint8 and ``y`` N×1 labels 1..10, where 10 means the digit 0)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return folder


def write_imagefolder(folder: Path, *, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> Path:
    """torchvision's ImageFolder layout under ``train/`` and ``test/``: ``<split>/<class>/<n>.png``, 8×8 RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / name / f"{i}.png")
    return folder


def load_whole(name: str, root: Path | None = None, **args: Any) -> DeviceData:
    """A data set that loads whole into memory (every built-in and file format does), as ``DeviceData``."""
    data = load_dataset(name, root, **args)
    assert isinstance(data, DeviceData), f"{name} streams"
    return data
