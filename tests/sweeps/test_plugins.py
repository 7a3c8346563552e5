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
        ({"model": "vgg16"}, ("model",), "no model named 'vgg16' is installed; installed: char_transformer, cnn1d"),
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


LM_SPEC = {
    "dataset": "python_source",
    "model": "char_transformer",
    "trainer": "char_lm",
    "objective": {"metric": "val_loss", "mode": "min"},
}


def test_a_trainer_its_arguments_and_the_objective_are_part_of_the_spec_and_of_every_cell():
    spec = make_spec(**LM_SPEC, trainer_args={"clip": 0.5})
    assert {c.config.trainer for c in cells(spec)} == {"char_lm"}
    assert {tuple(c.config.trainer_args.items()) for c in cells(spec)} == {(("clip", 0.5),)}
    canonical = spec.canonical()
    assert canonical["trainer"] == "char_lm" and canonical["objective"] == {"metric": "val_loss", "mode": "min"}
    other = make_spec(**LM_SPEC, trainer_args={"clip": 1.0})
    assert not {c.cell_id for c in cells(spec)} & {c.cell_id for c in cells(other)}
    # The objective is what the results are read as, not what trains: another objective is another sweep over the
    # same cells, whose finished trials it can reuse.
    bpc = make_spec(**LM_SPEC | {"objective": {"metric": "val_bpc"}}, trainer_args={"clip": 0.5})
    assert bpc.fingerprint() != spec.fingerprint()
    assert [c.cell_id for c in cells(bpc)] == [c.cell_id for c in cells(spec)]


def test_a_cell_of_wdgrids_own_loop_keeps_the_id_it_had_before_trainers():
    config = cells(make_spec())[0].config
    assert "trainer" not in config.as_dict() and "trainer_args" not in config.as_dict()


@pytest.mark.parametrize(
    ("overrides", "loc", "message"),
    [
        ({"trainer": "t5x"}, ("trainer",), "no trainer named 't5x' is installed; installed: char_lm"),
        (LM_SPEC | {"trainer_args": {"clip": -1}}, ("trainer_args", "clip"), "greater than or equal"),
        (LM_SPEC | {"trainer_args": {"lr": 1}}, ("trainer_args", "lr"), "Extra inputs"),
        ({"trainer_args": {"clip": 1}}, ("trainer_args",), "trainer_args need a trainer"),
        ({"objective": {"metric": "val_loss"}}, ("objective",), "wdgrid's own training loop reports no metric"),
        (LM_SPEC | {"objective": {"metric": "test_error"}}, ("objective",), "trainer 'char_lm' reports no metric"),
        ({"objective": {"metric": "test error"}}, ("objective", "metric"), "pattern"),
        ({"objective": {"metric": "test_error", "mode": "best"}}, ("objective", "mode"), "'min' or 'max'"),
    ],
)
def test_bad_trainers_arguments_and_objectives_are_refused_naming_the_field(overrides, loc, message):
    with pytest.raises(ValidationError) as caught:
        make_spec(**overrides)
    error = caught.value.errors()[0]
    assert error["loc"] == loc and message in error["msg"], error


def test_trainers_are_described_with_the_metrics_they_report():
    [lm] = [d for d in describe("trainer") if d.info.name == "char_lm"]
    assert lm.metrics == ("train_loss", "val_loss", "val_bpc") and lm.info.package == "wdgrid-examples"
    assert lm.args_schema is not None and "clip" in lm.args_schema["properties"]
