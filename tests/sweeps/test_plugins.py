"""The plugin registry through real entry points: wdgrid's own built-ins and the installed example package
(``examples/wdgrid-examples``, which ``make install`` installs) — no patched registry."""

from __future__ import annotations

import math
from importlib.metadata import version

import pytest
from pydantic import ValidationError

from sweeps import DATASETS, MODELS, cells, describe, installed, load_plugin
from tests.factories import make_spec


def test_builtins_and_a_plugin_package_register_the_same_way():
    models, datasets = installed("model"), installed("dataset")
    assert set(MODELS) <= set(models) and set(DATASETS) <= set(datasets)
    assert {models[m].package for m in MODELS} == {"wdgrid"}
    plugin = models["small_convnet"]
    assert (plugin.package, plugin.version) == ("wdgrid-examples", version("wdgrid-examples"))
    assert plugin.value == "wdgrid_examples.vision:small_convnet"
    assert {"npz", "imagefolder", "mnist", "fashion_mnist", "kmnist", "svhn", "gaussian_blobs"} <= set(datasets)
    assert callable(load_plugin("model", "small_convnet"))


def test_a_spec_names_a_plugin_like_a_builtin_and_its_arguments_are_checked():
    spec = make_spec(model="small_convnet", model_args={"width": 8}, dataset="digits")
    assert spec.canonical()["model_args"] == {"width": 8}
    assert all(c.config.model_args == {"width": 8} for c in cells(spec))
    wider = make_spec(model="small_convnet", model_args={"width": 16}, dataset="digits")
    assert wider.fingerprint() != spec.fingerprint()  # arguments are part of what trains
    assert not {c.cell_id for c in cells(spec)} & {c.cell_id for c in cells(wider)}


@pytest.mark.parametrize(
    ("overrides", "loc", "message"),
    [
        ({"model": "vgg16"}, ("model",), "no model named 'vgg16' is installed; installed: cnn1d, digits_cnn"),
        ({"dataset": "imagenet64"}, ("dataset",), "no dataset named 'imagenet64' is installed"),
        ({"model": "small_convnet", "model_args": {"width": "wide"}}, ("model_args", "width"), "valid integer"),
        ({"model": "small_convnet", "model_args": {"width": 2}}, ("model_args", "width"), "greater than or equal"),
        ({"model": "small_convnet", "model_args": {"depth": 3}}, ("model_args", "depth"), "Extra inputs"),
        ({"model_args": {"width": 8}}, ("model_args",), "model 'mlp' takes no arguments; got width"),
        ({"model": "small_convnet", "model_args": {"width": math.nan}}, ("model_args",), "no NaN or Infinity"),
        ({"dataset": "npz"}, ("dataset_args", "path"), "Field required"),
        ({"dataset": "npz", "dataset_args": {"path": "../x.npz"}}, ("dataset_args", "path"), "without '..'"),
        ({"dataset": "npz", "dataset_args": {"path": "/etc/x.npz"}}, ("dataset_args", "path"), "relative"),
    ],
)
def test_bad_plugin_names_and_arguments_are_refused_naming_the_field(overrides, loc, message):
    with pytest.raises(ValidationError) as caught:
        make_spec(**overrides)
    error = caught.value.errors()[0]
    assert error["loc"] == loc and message in error["msg"], error


def test_normalized_decay_needs_the_data_sets_size():
    spec = make_spec(
        dataset="gaussian_blobs",
        weight_decay_units="normalized",
        grids=[{"optimizer": "sgdw", "lr": [0.1], "weight_decay": [0.05]}],
    )
    assert spec.n_train() == 2048  # the plugin declares N_TRAIN
    assert cells(spec)[0].weight_decay == 0.05 * math.sqrt(128 / (2048 * 3))
    with pytest.raises(ValidationError, match="does not declare its number of training examples"):
        make_spec(dataset="npz", dataset_args={"path": "x.npz"}, weight_decay_units="normalized")


def test_describe_gives_each_plugins_doc_arguments_and_package():
    by_name = {d.info.name: d for d in describe("model")}
    convnet = by_name["small_convnet"]
    assert convnet.error is None and "BatchNorm" in convnet.doc
    assert convnet.args_schema is not None and set(convnet.args_schema["properties"]) == {"width", "dropout"}
    assert by_name["mlp"].args_schema is None and by_name["mlp"].doc
