"""What a `.keras` file says of its network, read without building it, and refusals when a run
directory's config.json and its file disagree (nothing silently changes the network)."""

import json
import os
import shutil
import tempfile
import zipfile

import keras
import numpy as np
import pytest
from train_helpers import CLASSES, tiny_config

from alexnet_keras import keras_file, run_dir
from alexnet_keras.model import build_alexnet

SMALL = dict(input_shape=(67, 67, 3), fc_units=64)


def _saved(tmp_path, name, **kwargs):
    path = str(tmp_path / f"{name}.keras")
    build_alexnet(len(CLASSES), **{**SMALL, **kwargs}).save(path)
    return path


def _edit_layer_configs(path, edit):
    """Rewrites the file with `edit(layer_config)` applied to each layer's config."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    for layer in config["config"]["layers"]:
        edit(layer["config"])
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, dict(architecture="paper", groups=2, use_lrn=True, lrn_form="paper",
                  input_scale=1.0, dropout=0.5, dropout_form="paper")),
        (dict(lrn_form="caffe", dropout_form="inverted", input_scale=1 / 64),
         dict(lrn_form="caffe", dropout_form="inverted", input_scale=1 / 64)),
        (dict(use_lrn=False, groups=1, dropout=0.3), dict(use_lrn=False, groups=1, dropout=0.3)),
        (dict(architecture="torchvision", groups=1, use_lrn=False, input_shape=(224, 224, 3)),
         dict(architecture="torchvision", image_size=224)),
    ],
)  # fmt: skip
def test_settings_read_back_from_the_file(tmp_path, kwargs, expected):
    found = keras_file.settings(_saved(tmp_path, "net", **kwargs))
    assert {k: found[k] for k in expected} == expected
    assert found["fc_units"] == 64
    # Rebuilt from them, the network computes what the file's did: no difference at all.
    rebuilt = build_alexnet(len(CLASSES), input_shape=(found["image_size"],) * 2 + (3,), **{
        k: v for k, v in found.items() if k != "image_size"
    })  # fmt: skip
    layers = keras_file.layer_configs(str(tmp_path / "net.keras"))
    assert keras_file.differences(layers, keras_file.model_layer_configs(rebuilt)) == []


def test_differences_name_the_layer_and_setting(tmp_path):
    paper = keras_file.layer_configs(_saved(tmp_path, "paper"))
    caffe = keras_file.layer_configs(_saved(tmp_path, "caffe", lrn_form="caffe"))
    found = keras_file.differences(paper, caffe)
    assert "lrn1 bias=1.0 instead of 2.0" in found and "lrn2 groups=1 instead of 2" in found
    no_lrn = keras_file.layer_configs(_saved(tmp_path, "nolrn", use_lrn=False))
    assert "layer lrn1 is missing" in keras_file.differences(paper, no_lrn)


def test_a_file_from_before_the_dropout_form_reads_as_inverted(tmp_path):
    """Files saved by 0.1 have no `form` in their dropout layers' configs: they trained with
    Keras's inverted dropout, and the file says so."""
    path = _saved(tmp_path, "old", dropout_form="inverted")
    _edit_layer_configs(path, lambda config: config.pop("form", None))
    assert keras_file.settings(path)["dropout_form"] == "inverted"


def test_a_run_directory_whose_config_disagrees_with_its_file_is_refused(tmp_path):
    """config.json says the paper's LRN; best.keras holds Caffe's: loading the run for export or
    evaluation refuses, naming the layer, instead of serving the paper's LRN silently."""
    model_dir = tmp_path / "run"
    os.makedirs(model_dir)
    config = tiny_config(model_dir, fc_units=64)
    shutil.copyfile(_saved(tmp_path, "caffe", lrn_form="caffe", kernel_initializer="he_normal",
                           input_scale=config.input_scale), model_dir / "best.keras")  # fmt: skip
    with pytest.raises(ValueError, match=r"another network than its run's config.json.*lrn1 bias"):
        run_dir.load_inference_model(str(model_dir / "best.keras"), config, len(CLASSES))


def test_files_that_hold_no_alexnet_are_named(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.keras is not a readable .keras model file"):
        keras_file.settings(str(bad))
    odd = _saved(tmp_path, "odd")
    _edit_layer_configs(odd, lambda config: config.update(alpha=5e-3) if "alpha" in config else 0)
    with pytest.raises(ValueError, match="lrn1 is neither the paper's LRN nor Caffe's"):
        keras_file.settings(odd)


def test_load_weights_gives_the_files_weights_bit_for_bit_and_leaves_no_copy(tmp_path, monkeypatch):
    """The extracted-copy loader against Keras's own reader of the same file. Its temporary copy
    goes to a directory of this test's own (other test processes write to /tmp meanwhile)."""
    path = _saved(tmp_path, "saved", seed=1)
    ours, keras_read, untouched = (build_alexnet(len(CLASSES), **SMALL, seed=2) for _ in range(3))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    keras_file.load_weights(ours, path)
    assert os.listdir(tmp_path / "tmp") == []
    keras_read.load_weights(path)
    for a, b in zip(ours.get_weights(), keras_read.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(np.any(a != b) for a, b in zip(ours.get_weights(), untouched.get_weights()))


def test_save_puts_the_run_files_inside_and_keras_still_loads_the_file(tmp_path):
    """`keras_file.save` adds the run files the directory has (a multi-worker run's other
    workers have none), atomically; Keras loads the file as ever; plain files have none."""
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    texts = {"config.json": '{"image_size": 67}', "class_names.json": json.dumps(list(CLASSES))}
    for name, text in texts.items():
        (model_dir / name).write_text(text)
    model = build_alexnet(len(CLASSES), **SMALL)
    path = str(tmp_path / "best.keras")
    keras_file.save(model, path, str(model_dir))
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "run"]  # No temporary file left.
    assert keras_file.run_files_inside(path) == texts
    loaded = keras.saving.load_model(path, compile=False)
    for ours, theirs in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    plain = _saved(tmp_path, "plain")
    assert keras_file.run_files_inside(plain) == {}
    with pytest.raises(ValueError, match="not a readable .keras model file"):
        keras_file.run_files_inside(str(model_dir / "config.json"))
