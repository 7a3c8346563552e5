"""The data registry, through the real loaders: generated MNIST-1D, bundled digits, and tiny files in the real
CIFAR-10/100 and ImageNet32 on-disk formats."""

from __future__ import annotations

import pytest
import torch

from sweeps import PluginError
from tests.factories import load_whole, write_cifar, write_imagenet32
from workers.data import DataNotFoundError, random_crop_flip


def test_mnist1d_is_generated_once_and_then_read_from_its_cache(wdgrid_data_dir):
    data = load_whole("mnist1d")
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.n_classes == 10 and set(data.y_train.tolist()) == set(range(10))
    cache = wdgrid_data_dir / "mnist1d.npz"
    stamp = cache.stat().st_mtime_ns
    again = load_whole("mnist1d")
    assert cache.stat().st_mtime_ns == stamp
    assert torch.equal(again.x_train, data.x_train)


def test_digits_is_a_fixed_stratified_split():
    data = load_whole("digits")
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert torch.equal(load_whole("digits").y_test, data.y_test)


@pytest.mark.parametrize("n_classes", [10, 100])
def test_cifar_reads_the_real_pickle_format(tmp_path, n_classes):
    write_cifar(tmp_path, n_classes=n_classes)
    data = load_whole(f"cifar{n_classes}", tmp_path)
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (10, 3, 32, 32)
    assert data.n_classes == n_classes and data.augment
    assert data.mean is not None and data.std is not None
    x, _ = data.train_batch(torch.arange(40), torch.Generator().manual_seed(0), torch.float32)
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.float32
    # per-channel normalization: the un-augmented training set has mean 0 and std 1 per channel
    plain = data.test_inputs(torch.float32)
    assert plain.shape == (10, 3, 32, 32)
    full = (data.x_train.float() / 255 - data.mean.view(1, 3, 1, 1)) / data.std.view(1, 3, 1, 1)
    torch.testing.assert_close(full.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(full.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


def test_cifar_pixels_land_in_channel_major_order(tmp_path):
    folder = write_cifar(tmp_path)
    import pickle

    with (folder / "data_batch_1").open("rb") as f:
        raw = pickle.load(f)
    data = load_whole("cifar10", tmp_path)
    first = torch.as_tensor(raw["data"][0]).view(3, 32, 32)
    assert torch.equal(data.x_train[0], first)
    assert data.y_train[0].item() == raw["labels"][0]


def test_imagenet32_reads_the_published_pickles_with_one_based_labels(tmp_path):
    folder = write_imagenet32(tmp_path)
    data = load_whole("imagenet32", tmp_path)
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_test.shape == (6, 3, 32, 32)
    import pickle

    with (folder / "val_data").open("rb") as f:
        raw = pickle.load(f)
    assert data.y_test.tolist() == [label - 1 for label in raw["labels"]]
    assert data.n_classes == 1000


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet32"])
def test_missing_data_is_a_clear_error_naming_the_path(tmp_path, name):
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_whole(name, tmp_path)


def test_an_unknown_dataset_is_an_error_naming_the_field_and_what_is_installed():
    with pytest.raises(PluginError, match=r"no dataset named 'imagenet64' is installed; installed: cifar10, ") as e:
        load_whole("imagenet64")
    assert e.value.field == "dataset"


def test_random_crop_flip_takes_windows_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1  # no zeros inside the image
    out = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [
            w
            for dy in range(5)
            for dx in range(5)
            for w in (padded[i, :, dy : dy + 6, dx : dx + 6], padded[i, :, dy : dy + 6, dx : dx + 6].flip(2))
        ]
        assert any(torch.equal(out[i], w) for w in windows)
    again = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert torch.equal(out, again)


def test_random_crop_flip_varies_per_image():
    x = torch.rand(64, 3, 8, 8) + 1
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    changed = [not torch.equal(out[i], x[i]) for i in range(64)]
    assert sum(changed) >= 60  # identity (no shift, no flip) happens for 1 image in 162


def test_a_corrupt_mnist1d_cache_is_named_and_rebuilt(tmp_path, caplog):
    good = load_whole("mnist1d", tmp_path)
    cache = tmp_path / "mnist1d.npz"
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated, as a full disk or a killed writer leaves it
    with caplog.at_level("WARNING", logger="workers.data"):
        again = load_whole("mnist1d", tmp_path)
    assert f"the cache {cache} cannot be read" in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(again.x_train, good.x_train)
    caplog.clear()
    load_whole("mnist1d", tmp_path)  # rebuilt: read without a word
    assert "cannot be read" not in caplog.text


def test_a_data_directory_that_cannot_be_written_trains_from_memory(tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a folder")
    root = tmp_path / "a-file" / "data"  # cannot be created, even by root (who ignores read-only modes)
    with caplog.at_level("WARNING", logger="workers.data"):
        data = load_whole("mnist1d", root)
    assert data.x_train.shape == (4000, 40) and "training from memory" in caplog.text
