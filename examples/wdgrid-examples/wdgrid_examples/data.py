"""A data set plugin: Gaussian blobs generated in memory (nothing to download), returned as four arrays.

wdgrid calls ``gaussian_blobs(data_dir, **dataset_args)``; a loader returns ``(x_train, y_train, x_test, y_test)``
(numpy arrays or tensors; integer labels from 0; uint8 N×C×H×W inputs count as images) or wdgrid's own
``workers.data.DeviceData``. ``N_TRAIN`` declares the number of training examples, which the paper's normalized
weight decay λ = λ_norm·√(b/(B·T)) needs at submission time; a loader whose size depends on its files leaves it out,
and its sweeps give λ in raw units.

With ``"stream": true`` the same examples come back as two ``torch.utils.data.Dataset`` s in a
``workers.data.StreamedData``: what a loader does for data that does not fit in memory (wdgrid reads it batch by
batch through a ``DataLoader``, in the same batch order, so the numbers are the same).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from workers.data import StreamedData

N_TRAIN = 2048
N_TEST = 512


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dims: int = Field(default=16, ge=2, le=1024, description="Features per example.")
    classes: int = Field(default=4, ge=2, le=100, description="Blobs, one per class.")
    spread: float = Field(default=2.0, gt=0, le=100, description="Standard deviation of each blob around its centre.")
    stream: bool = Field(default=False, description="Return Datasets to stream instead of arrays.")


def gaussian_blobs(data_dir: Path, **dataset_args: Any) -> tuple[np.ndarray, ...] | StreamedData:
    """Gaussian blobs, one per class, centres drawn once (seed 0): 2048 train / 512 test float32 examples."""
    a = Args.model_validate(dataset_args)
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(a.classes, a.dims))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, a.classes, size=n)
        x = centres[y] + rng.normal(scale=a.spread, size=(n, a.dims))
        return x.astype(np.float32), y.astype(np.int64)

    x, y = draw(N_TRAIN)
    x_test, y_test = draw(N_TEST)
    if not a.stream:
        return x, y, x_test, y_test
    train = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    test = TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test))
    return StreamedData("gaussian_blobs", train, test, n_classes=a.classes, input_shape=(a.dims,))


gaussian_blobs.Args = Args  # type: ignore[attr-defined]
gaussian_blobs.N_TRAIN = N_TRAIN  # type: ignore[attr-defined]  # B of the normalized weight decay
