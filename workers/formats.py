"""Your data without code: data set plugins that read common on-disk formats under the data directory.

Each is registered as a ``wdgrid.datasets`` entry point (``pyproject.toml``) and takes its arguments from a spec's
``dataset_args``; every path is relative to the data directory (``WDGRID_DATA_DIR``) and may not leave it, not even
through a symbolic link (``sweeps.resolve_data_path``). Nothing is downloaded.

==================  ==============================================================================================
name                what ``path`` names (default in brackets)
==================  ==============================================================================================
``npz``             one ``.npz`` file with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``: uint8 N×C×H×W
                    inputs are images (normalized per channel, random crop + flip), anything else float features
``imagefolder``     a folder with ``train/`` and ``test/``, each in torchvision's ImageFolder layout
                    (``<class>/<image>``); classes are the sorted folder names of ``train/``; every image must have
                    the same size, or give ``size`` to resize them to size × size; RGB (``grayscale``: one channel)
``mnist``           torchvision's MNIST files: ``<path>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` [.]
``fashion_mnist``   the same layout under ``FashionMNIST/raw`` [.]
``kmnist``          the same layout under ``KMNIST/raw`` [.]
``svhn``            ``<path>/train_32x32.mat`` and ``test_32x32.mat`` (the cropped-digits release) [.]
==================  ==============================================================================================

The module imports nothing heavy at the top: the controller imports it to check a spec's arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from sweeps import DataPath, resolve_data_path

if TYPE_CHECKING:
    from workers.data import DeviceData

__all__ = ["fashion_mnist", "imagefolder", "kmnist", "mnist", "npz", "svhn"]


class _Args(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _found(root: Path, path: str, what: str) -> Path:
    from workers.data import DataNotFoundError

    full = resolve_data_path(root, path)
    if not full.exists():
        raise DataNotFoundError(f"{what}: nothing at {path!r} in the data directory {root}")
    return full


# --- npz ----------------------------------------------------------------------------------------------------------
class NpzArgs(_Args):
    path: DataPath = Field(description="The .npz file, relative to the data directory.")


def npz(root: Path, **args: Any) -> DeviceData:
    """Arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` from one ``.npz`` file (``numpy.savez``)."""
    import numpy as np

    from workers.data import as_device_data

    a = NpzArgs.model_validate(args)
    file = _found(root, a.path, "npz")
    with np.load(file, allow_pickle=False) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
        if missing:
            raise ValueError(f"npz: {a.path} has no array {', '.join(missing)} (it has {', '.join(f.files)})")
        return as_device_data("npz", (f["x_train"], f["y_train"], f["x_test"], f["y_test"]))


npz.Args = NpzArgs  # type: ignore[attr-defined]  # how a plugin declares its arguments (sweeps._plugins)


# --- imagefolder --------------------------------------------------------------------------------------------------
class ImageFolderArgs(_Args):
    path: DataPath = Field(description="The folder holding train/ and test/, relative to the data directory.")
    size: int | None = Field(default=None, ge=1, le=1024, description="Resize every image to size × size pixels.")
    grayscale: bool = Field(default=False, description="One channel instead of RGB.")


def imagefolder(root: Path, **args: Any) -> DeviceData:
    """Images in torchvision's ImageFolder layout under ``train/`` and ``test/``, loaded whole as uint8 tensors."""
    import numpy as np
    from PIL import Image

    from workers.data import as_device_data

    a = ImageFolderArgs.model_validate(args)
    folder = _found(root, a.path, "imagefolder")
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir()) if (folder / "train").is_dir() else []
    if not classes:
        raise ValueError(f"imagefolder: {a.path}/train holds no class folders")

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for label, name in enumerate(classes):
            for file in sorted((folder / split / name).glob("*")):
                if not file.is_file():
                    continue
                with Image.open(file) as opened:
                    image = opened.convert("L" if a.grayscale else "RGB")
                if a.size is not None:
                    image = image.resize((a.size, a.size))
                array = np.asarray(image, dtype=np.uint8)
                if xs and array.shape != xs[0].shape:
                    raise ValueError(
                        f"imagefolder: {file.relative_to(folder)} is {array.shape[1]}×{array.shape[0]}, not "
                        f"{xs[0].shape[1]}×{xs[0].shape[0]} like the others: give size to resize them"
                    )
                xs.append(array)
                ys.append(label)
        if not xs:
            raise ValueError(f"imagefolder: {a.path}/{split} holds no images of the classes {classes}")
        x = np.stack(xs)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # N×C×H×W
        return x, np.asarray(ys, dtype=np.int64)

    return as_device_data("imagefolder", (*read("train"), *read("test")))


imagefolder.Args = ImageFolderArgs  # type: ignore[attr-defined]


# --- torchvision's readers ----------------------------------------------------------------------------------------
class FolderArgs(_Args):
    path: DataPath = Field(default=".", description="The folder torchvision's reader is given, in the data directory.")


def _mnist_like(kind: str, root: Path, args: dict[str, Any]) -> DeviceData:
    from torchvision import datasets

    from workers.data import DataNotFoundError, as_device_data

    a = FolderArgs.model_validate(args)
    folder = resolve_data_path(root, a.path)
    reader = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}[kind]
    try:
        train, test = reader(str(folder), train=True), reader(str(folder), train=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True to download it"
        raise DataNotFoundError(
            f"{kind}: no {reader.__name__} files in {folder / reader.__name__ / 'raw'} "
            "({train,t10k}-{images-idx3,labels-idx1}-ubyte, unpacked)"
        ) from exc
    return as_device_data(kind, (train.data[:, None], train.targets, test.data[:, None], test.targets))


def mnist(root: Path, **args: Any) -> DeviceData:
    """MNIST from torchvision's files (idx format, unpacked) under ``<path>/MNIST/raw``."""
    return _mnist_like("mnist", root, args)


def fashion_mnist(root: Path, **args: Any) -> DeviceData:
    """Fashion-MNIST from torchvision's files under ``<path>/FashionMNIST/raw``."""
    return _mnist_like("fashion_mnist", root, args)


def kmnist(root: Path, **args: Any) -> DeviceData:
    """Kuzushiji-MNIST from torchvision's files under ``<path>/KMNIST/raw``."""
    return _mnist_like("kmnist", root, args)


def svhn(root: Path, **args: Any) -> DeviceData:
    """SVHN (cropped digits) from ``<path>/train_32x32.mat`` and ``test_32x32.mat``, read by torchvision."""
    from torchvision import datasets

    from workers.data import DataNotFoundError, as_device_data

    a = FolderArgs.model_validate(args)
    folder = resolve_data_path(root, a.path)
    missing = [f for f in ("train_32x32.mat", "test_32x32.mat") if not (folder / f).is_file()]
    if missing:
        raise DataNotFoundError(f"svhn: missing {', '.join(missing)} in {folder}")

    class Local(datasets.SVHN):  # type: ignore[misc]
        def _check_integrity(self) -> bool:  # the files exist; torchvision would also md5 them (test copies fail)
            return True

    train, test = Local(str(folder), split="train"), Local(str(folder), split="test")
    return as_device_data("svhn", (train.data, train.labels, test.data, test.labels))


for _loader in (mnist, fashion_mnist, kmnist, svhn):
    _loader.Args = FolderArgs  # type: ignore[attr-defined]
