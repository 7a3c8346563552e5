"""The data registry: data sets a sweep can name, loaded whole into tensors on the training device (or streamed).

On the fast path no per-sample Python runs while training: a data set is four tensors (train/test inputs and
labels, :class:`DeviceData`), batches are index gathers, and the paper's augmentation (random crop with 4-pixel zero
padding, horizontal flip) runs batched on the device. Images stay uint8 on the device (all of CIFAR-10 is 150 MB)
and are normalized per channel per batch.

==============  =========================================================================================
name            source (nothing is downloaded unless asked for)
==============  =========================================================================================
``mnist1d``     ``mnist1d.data.make_dataset`` with its default arguments (data seed 42), cached as
                ``<data dir>/mnist1d.npz``: 4000 train / 1000 test, 40 features, 10 classes
``digits``      scikit-learn's bundled ``load_digits``: 8×8 images scaled to [0, 1], a stratified split with
                seed 0 into 1437 train / 360 test
``cifar10``     torchvision's ``CIFAR10`` reading ``<data dir>/cifar-10-batches-py``
``cifar100``    torchvision's ``CIFAR100`` reading ``<data dir>/cifar-100-python``
``imagenet32``  Chrabaszcz et al. (2017): ``<data dir>/imagenet32/train_data_batch_1..10`` and ``val_data``,
                pickles with ``data`` (N×3072 uint8, channel-major) and 1-based ``labels``
==============  =========================================================================================

A data set that does not fit in memory is two ``torch.utils.data.Dataset`` s instead (:class:`StreamedData`), read
batch by batch through a ``DataLoader`` in the same batch order; the training loop takes either (:data:`Data`).

The data directory is an argument (the controller's ``WDGRID_DATA_DIR`` reaches workers with each chunk), by default
:data:`DEFAULT_DATA_DIR`, ``~/.cache/wdgrid/data``. Nothing here reads the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import sweeps
from sweeps import load_plugin

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "Data",
    "DataNotFoundError",
    "DeviceData",
    "StreamedData",
    "epoch_order",
    "load_dataset",
    "steps_per_epoch",
]

log = logging.getLogger(__name__)

CIFAR_PAD: Final = 4  # pixels of zero padding before the random 32×32 crop (the paper's augmentation)


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not where wdgrid looks; the message names the path and how to get them."""


DEFAULT_DATA_DIR: Path = sweeps.DEFAULT_DATA_DIR
"""Where data sets live when no data directory is given (tests point it elsewhere)."""


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches per epoch: the last partial batch is kept unless it would hold a single example (which BatchNorm
    cannot normalize in training mode)."""
    return n_train // batch_size + (1 if n_train % batch_size > 1 else 0)


def epoch_order(n_train: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A fresh random order of the training set (drawn from the CPU ``generator``), split into the epoch's batches
    of indices (CPU tensors). Both kinds of data set use it, so a seed gives the same batches either way."""
    order = torch.randperm(n_train, generator=generator)
    return list(order.split(batch_size))[: steps_per_epoch(n_train, batch_size)]


@dataclass(frozen=True)
class DeviceData:
    """A whole data set as tensors on one device.

    ``x_*`` are float32 features, or uint8 images N×C×H×W when ``mean``/``std`` are set (normalized per batch);
    ``y_*`` are int64 class indices. ``augment`` turns on random crop + flip for training batches.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    mean: Tensor | None = None  # per channel, of images scaled to [0, 1]
    std: Tensor | None = None
    augment: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> DeviceData:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            mean=move(self.mean),
            std=move(self.std),
        )

    def _prepare(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        if self.mean is None or self.std is None:
            return x.to(dtype)
        x = x.to(dtype) / 255.0
        return (x - self.mean.to(dtype).view(1, -1, 1, 1)) / self.std.to(dtype).view(1, -1, 1, 1)

    def train_batch(self, idx: Tensor, generator: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The training examples at ``idx`` (on this device), augmented with randomness from ``generator`` (CPU)."""
        x, y = self._prepare(self.x_train[idx], dtype), self.y_train[idx]
        if self.augment:
            x = random_crop_flip(x, generator)
        return x, y

    def test_inputs(self, dtype: torch.dtype) -> Tensor:
        return self._prepare(self.x_test, dtype)

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def batches(
        self, batch_size: int, generator: torch.Generator, dtype: torch.dtype
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of training batches (inputs, labels) on this device, in :func:`epoch_order`."""
        for idx in epoch_order(self.n_train, batch_size, generator):
            yield self.train_batch(idx.to(self.device), generator, dtype)

    def test_batches(self, batch_size: int, dtype: torch.dtype) -> Iterator[tuple[Tensor, Tensor]]:
        """The test set in order, ``batch_size`` examples at a time."""
        x_all = self.test_inputs(dtype)
        for start in range(0, self.n_test, batch_size):
            yield x_all[start : start + batch_size], self.y_test[start : start + batch_size]

    def sample(self, n: int, dtype: torch.dtype) -> Tensor:
        """The first ``n`` training inputs as the model sees them (for checks on a tiny batch)."""
        return self._prepare(self.x_train[:n], dtype)


_CPU: Final = torch.device("cpu")


@dataclass(frozen=True)
class StreamedData:
    """A data set too large for memory: two ``torch.utils.data.Dataset`` s whose items are (input tensor, label),
    read batch by batch through a ``DataLoader`` and moved to the device.

    The training batches are exactly :class:`DeviceData`'s (the same :func:`epoch_order`, so a seed gives the same
    batches whether a data set streams or not); inputs are cast to the run's dtype when they are floating point and
    kept as they are otherwise (token ids). Nothing is augmented here: a Dataset's own transforms do that, in its
    ``workers`` loader processes (0: in the training process).
    """

    name: str
    train: Dataset[Any]
    test: Dataset[Any]
    n_classes: int
    input_shape: tuple[int, ...]
    device: torch.device = _CPU
    workers: int = 0

    @property
    def n_train(self) -> int:
        return len(self.train)  # type: ignore[arg-type]  # a map-style Dataset has a length

    @property
    def n_test(self) -> int:
        return len(self.test)  # type: ignore[arg-type]

    def to(self, device: torch.device | str) -> StreamedData:
        return replace(self, device=torch.device(device))

    def _loader(self, dataset: Dataset[Any], batches: list[list[int]]) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            dataset, batch_sampler=batches, num_workers=self.workers, pin_memory=self.device.type == "cuda"
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _cast(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        return x.to(dtype) if x.is_floating_point() else x

    def batches(
        self, batch_size: int, generator: torch.Generator, dtype: torch.dtype
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of training batches in :func:`epoch_order`, streamed."""
        order = [idx.tolist() for idx in epoch_order(self.n_train, batch_size, generator)]
        for x, y in self._loader(self.train, order):
            yield self._cast(x, dtype), y

    def test_batches(self, batch_size: int, dtype: torch.dtype) -> Iterator[tuple[Tensor, Tensor]]:
        """The test set in order, streamed ``batch_size`` examples at a time."""
        order = [list(range(i, min(i + batch_size, self.n_test))) for i in range(0, self.n_test, batch_size)]
        for x, y in self._loader(self.test, order):
            yield self._cast(x, dtype), y

    def sample(self, n: int, dtype: torch.dtype) -> Tensor:
        x, _ = next(self._loader(self.train, [list(range(min(n, self.n_train)))]))
        return self._cast(x, dtype)


Data = DeviceData | StreamedData
"""A loaded data set: whole on the device (the fast path), or streamed from Datasets."""


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = CIFAR_PAD) -> Tensor:
    """Batched augmentation of N×C×H×W images: a random H×W crop of the zero-padded image and a horizontal flip with
    probability 1/2, independently per image. The random numbers come from the CPU ``generator`` (so runs are
    reproducible whatever the device) and move to the device in one small copy."""
    n, _, h, w = x.shape
    draws = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    dy, dx, flips = draws[0].to(x.device), draws[1].to(x.device), flips.to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=x.device).view(1, h) + dy.view(n, 1)).view(n, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, w) + dx.view(n, 1)
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


def channel_stats(images: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of uint8 N×C×H×W images scaled to [0, 1], accumulated in float64
    over chunks (ImageNet32 as float32 would need 15 GB)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


# --- Loaders ----------------------------------------------------------------------------------------------------
def _as_data(
    name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_classes: int, images: bool
) -> DeviceData:
    if images:
        xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.uint8)
        mean, std = channel_stats(xt)
        return DeviceData(
            name,
            xt,
            torch.as_tensor(y, dtype=torch.long),
            torch.as_tensor(np.ascontiguousarray(x_test), dtype=torch.uint8),
            torch.as_tensor(y_test, dtype=torch.long),
            n_classes,
            mean=mean,
            std=std,
            augment=True,
        )
    return DeviceData(
        name,
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.long),
        torch.as_tensor(x_test, dtype=torch.float32),
        torch.as_tensor(y_test, dtype=torch.long),
        n_classes,
    )


_MNIST1D_SHAPES: Final = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}


def load_mnist1d(root: Path) -> DeviceData:
    """MNIST-1D (Greydanus 2020), generated in memory from its templates and cached as ``mnist1d.npz``.

    A cache that cannot be read (truncated, corrupt, of other shapes) is named in one warning and rebuilt; a data
    directory that cannot be written trains from the generated arrays, with a warning, and caches nothing."""
    path = root / "mnist1d.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in _MNIST1D_SHAPES}
            if any(arrays[k].shape != shape for k, shape in _MNIST1D_SHAPES.items()):
                raise ValueError("arrays of unexpected shapes")
            return _as_data("mnist1d", arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"], 10, images=False)
        except Exception as exc:  # zipfile, OSError, ValueError, KeyError...: any unreadable cache is rebuilt
            log.warning("mnist1d: the cache %s cannot be read (%s: %s); rebuilding it", path, type(exc).__name__, exc)
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset generates the data from templates in memory with the default data seed (42); get_dataset
    # would download instead. The cache is written atomically, so concurrent workers never read half a file.
    data = make_dataset(get_dataset_args())
    arrays = {k: np.asarray(data[k]) for k in _MNIST1D_SHAPES}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        root.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:  # read-only or full: the data is in memory all the same
        log.warning("mnist1d: cannot cache it in %s (%s); training from memory", root, exc.strerror or exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
    return _as_data("mnist1d", arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"], 10, images=False)


def load_digits_data(root: Path) -> DeviceData:
    """scikit-learn's bundled 8×8 digits, a stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()  # bundled with scikit-learn: 1797 8×8 images, 16 grey levels
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=360, stratify=bunch.target, random_state=0
    )
    return _as_data("digits", x_train, y_train, x_test, y_test, 10, images=False)


def _cifar(name: str, root: Path, download: bool) -> DeviceData:
    from torchvision import datasets

    base: type[datasets.CIFAR10] = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100

    class Local(base):  # type: ignore[misc]
        # Check that the files exist; torchvision would also md5 each one, which rejects any re-packed or test
        # copy. A download is still verified against the archive's md5.
        train_list = [(f, None) for f, _ in base.train_list]  # noqa: RUF012 - torchvision's own attributes
        test_list = [(f, None) for f, _ in base.test_list]  # noqa: RUF012
        meta = {**base.meta, "md5": None}  # noqa: RUF012

    folder = root / base.base_folder
    if not download and not folder.is_dir():
        raise DataNotFoundError(
            f"{name}: no data at {folder}. Download and unpack {base.url} into {root} "
            f"(or set WDGRID_DATA_DIR to the folder that holds {base.base_folder})."
        )
    try:
        train, test = Local(str(root), train=True, download=download), Local(str(root), train=False)
    except RuntimeError as exc:
        raise DataNotFoundError(f"{name}: incomplete data in {folder}: {exc}") from exc
    to_nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)  # noqa: E731
    n_classes = 10 if name == "cifar10" else 100
    return _as_data(name, to_nchw(train.data), train.targets, to_nchw(test.data), test.targets, n_classes, images=True)


def load_imagenet32(root: Path) -> DeviceData:
    """ImageNet 32×32 (Chrabaszcz et al. 2017), the pickle release, from ``<data dir>/imagenet32``."""
    folder = root / "imagenet32"
    files = [folder / f"train_data_batch_{i}" for i in range(1, 11)] + [folder / "val_data"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataNotFoundError(
            f"imagenet32: missing {', '.join(missing)} in {folder}. Get Imagenet32_train.zip and Imagenet32_val.zip "
            "(pickle format) from https://image-net.org/download-images (registration needed) and unpack them there."
        )

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with path.open("rb") as f:
            d = pickle.load(f)
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d["labels"], dtype=np.int64) - 1  # the files count classes from 1

    parts = [read(f) for f in files[:-1]]
    x_test, y_test = read(files[-1])
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _as_data("imagenet32", x, y, x_test, y_test, 1000, images=True)


def load_cifar10(root: Path) -> DeviceData:
    """CIFAR-10 from ``<data dir>/cifar-10-batches-py`` (the python release, unpacked)."""
    return _cifar("cifar10", root, download=False)


def load_cifar100(root: Path) -> DeviceData:
    """CIFAR-100 from ``<data dir>/cifar-100-python`` (the python release, unpacked)."""
    return _cifar("cifar100", root, download=False)


# wdgrid's own fixed data sets; pyproject.toml registers them as ``wdgrid.datasets`` entry points, like any plugin.
DATASETS: Final[dict[str, Callable[[Path], DeviceData]]] = {
    "mnist1d": load_mnist1d,
    "digits": load_digits_data,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagenet32": load_imagenet32,
}

Arrays = tuple[Any, Any, Any, Any]
"""What a data set plugin may return instead of :class:`DeviceData`: ``(x_train, y_train, x_test, y_test)`` as numpy
arrays or tensors. Integer labels from 0; uint8 inputs of shape N×C×H×W are images (normalized per channel and
augmented with random crop and flip, like CIFAR), anything else float features."""


def as_data(name: str, loaded: DeviceData | StreamedData | Arrays) -> Data:
    """A plugin's return value as :data:`Data` (CPU tensors, or Datasets to stream); ``ValueError`` naming the
    plugin when it is none of :class:`DeviceData`, :class:`StreamedData` or four arrays with matching lengths."""
    if isinstance(loaded, DeviceData | StreamedData):
        if loaded.n_train == 0 or loaded.n_test == 0:
            raise ValueError(f"data set {name!r}: {loaded.n_train} train and {loaded.n_test} test examples")
        return loaded
    return as_device_data(name, loaded)


def as_device_data(name: str, loaded: Arrays) -> DeviceData:
    """Four arrays ``(x_train, y_train, x_test, y_test)`` as :class:`DeviceData` (CPU tensors); ``ValueError``
    naming the data set when they are not four arrays with matching lengths and integer labels from 0."""
    if not (isinstance(loaded, tuple | list) and len(loaded) == 4):
        raise ValueError(
            f"data set {name!r} returned {type(loaded).__name__}: expected DeviceData, StreamedData or 4 arrays"
        )
    x, y, x_test, y_test = (np.asarray(a.cpu() if isinstance(a, Tensor) else a) for a in loaded)
    if len(x) != len(y) or len(x_test) != len(y_test) or len(x) == 0 or len(x_test) == 0:
        raise ValueError(f"data set {name!r}: train {len(x)}/{len(y)} and test {len(x_test)}/{len(y_test)} examples")
    if not (np.issubdtype(y.dtype, np.integer) and np.issubdtype(y_test.dtype, np.integer)):
        raise ValueError(f"data set {name!r}: labels must be integers")
    if y.min() < 0 or y_test.min() < 0:
        raise ValueError(f"data set {name!r}: labels must be >= 0")
    n_classes = int(max(y.max(), y_test.max())) + 1
    images = x.dtype == np.uint8 and x.ndim == 4
    return _as_data(name, x, y.astype(np.int64), x_test, y_test.astype(np.int64), n_classes, images=images)


def load_dataset(name: str, root: Path | None = None, **args: Any) -> Data:
    """Load an installed data set plugin (a built-in or a package's ``wdgrid.datasets`` entry point) with its
    arguments, into CPU tensors (``.to(device)`` moves it whole), or as Datasets that stream to the device.

    Raises ``sweeps.PluginError`` naming the plugin when it is not installed (on this worker) and
    :class:`DataNotFoundError` naming the path when its files are missing.
    """
    loader = load_plugin("dataset", name)
    return as_data(name, loader(root or DEFAULT_DATA_DIR, **args))
