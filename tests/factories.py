"""Tiny data sets written in the real on-disk formats, read back through the real loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


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
