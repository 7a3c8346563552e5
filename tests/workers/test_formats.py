"""Data without code: the built-in format plugins read tiny files written in each real on-disk format, and no path
argument leaves the data directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sweeps import DataPathError, resolve_data_path
from tests.factories import load_whole, write_idx, write_imagefolder, write_svhn
from workers.data import DataNotFoundError


def test_npz_of_features_and_of_images(tmp_path: Path):
    rng = np.random.default_rng(0)
    features: dict[str, Any] = {"x_train": rng.normal(size=(20, 5)), "y_train": np.arange(20) % 3}
    features |= {"x_test": rng.normal(size=(6, 5)), "y_test": np.arange(6) % 3}
    np.savez(tmp_path / "features.npz", **features)
    data = load_whole("npz", tmp_path, path="features.npz")
    assert data.x_train.shape == (20, 5) and data.x_train.dtype == torch.float32
    assert data.n_classes == 3 and not data.augment
    images: dict[str, Any] = {
        "x_train": rng.integers(0, 256, (8, 3, 4, 4), dtype=np.uint8),
        "y_train": np.arange(8) % 2,
    }
    images |= {"x_test": rng.integers(0, 256, (4, 3, 4, 4), dtype=np.uint8), "y_test": np.arange(4) % 2}
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "images.npz", **images)
    data = load_whole("npz", tmp_path, path="sub/images.npz")
    assert data.x_train.dtype == torch.uint8 and data.augment and data.mean is not None
    np.savez(tmp_path / "half.npz", x_train=features["x_train"])
    with pytest.raises(ValueError, match="has no array y_train, x_test, y_test"):
        load_whole("npz", tmp_path, path="half.npz")


def test_imagefolder_reads_class_folders_and_resizes_on_request(tmp_path: Path):
    write_imagefolder(tmp_path / "pets")
    data = load_whole("imagefolder", tmp_path, path="pets")
    assert data.x_train.shape == (6, 3, 8, 8) and data.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x_test.shape == (6, 3, 8, 8) and data.augment
    small = load_whole("imagefolder", tmp_path, path="pets", size=4, grayscale=True)
    assert small.x_train.shape == (6, 1, 4, 4)


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")]
)
def test_torchvision_mnist_family_files(tmp_path: Path, name: str, folder: str):
    write_idx(tmp_path / "vision" / folder / "raw")
    data = load_whole(name, tmp_path, path="vision")
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28)
    assert data.y_train.tolist()[:3] == [0, 1, 2]
    with pytest.raises(DataNotFoundError, match=f"no {folder} files"):
        load_whole(name, tmp_path / "empty")


def test_svhn_mat_files(tmp_path: Path):
    write_svhn(tmp_path)
    data = load_whole("svhn", tmp_path)
    assert data.x_train.shape == (10, 3, 32, 32) and data.x_test.shape == (5, 3, 32, 32)
    assert data.y_train.tolist()[:3] == [1, 2, 3] and 0 in data.y_train.tolist()  # label 10 is the digit 0


def test_paths_never_leave_the_data_directory(tmp_path: Path):
    root, outside = tmp_path / "data", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    np.savez(outside / "x.npz", x_train=np.zeros((2, 2)), y_train=[0, 1], x_test=np.zeros((2, 2)), y_test=[0, 1])
    for bad in ("/etc/passwd", "../secret/x.npz", "a/../../secret/x.npz", ""):
        with pytest.raises(ValidationError, match=r"data directory|non-empty"):
            load_whole("npz", root, path=bad)
    os.symlink(outside, root / "link")
    with pytest.raises(DataPathError, match="leads outside the data directory"):
        load_whole("npz", root, path="link/x.npz")
    with pytest.raises(DataPathError):
        resolve_data_path(root, "link")
    os.symlink(root / "inside", root / "alias")  # a link that stays inside is fine
    assert resolve_data_path(root, "alias") == (root / "inside").resolve()
