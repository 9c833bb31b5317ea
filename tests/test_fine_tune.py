"""Fine-tuning: --init_from copies matching layers, --freeze keeps layers fixed, fc8 starts new."""

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from train_helpers import CLASSES, tiny_arrays, tiny_config, tiny_datasets

from alexnet_keras import run_files
from alexnet_keras.cli import train as train_cli
from alexnet_keras.data import stats
from alexnet_keras.importers import run_writer
from alexnet_keras.model import build_alexnet
from alexnet_keras.run_dir import load_run
from alexnet_keras.training import fine_tune
from alexnet_keras.training.datasets import Datasets
from alexnet_keras.training.trainer import run

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained 4-class run to start from, without dropout (in the paper's form the rate is the
    source's: the runs that start from it use none either)."""
    model_dir = tmp_path_factory.mktemp("source")
    config = tiny_config(model_dir, epochs=1, seed=1, dropout=0.0)
    run(config, tf.distribute.get_strategy(), tiny_datasets())
    return str(model_dir)


def _two_class_datasets(steps=4):
    images, labels = tiny_arrays(n=16, seed=5)
    labels = labels % 2  # Another task: 2 classes, so fc8 has another shape.
    train = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(8)
    once = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    return Datasets(train, once, once, ("left", "right"), steps, "test")


class WeightsAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = {
            layer.name: [w.numpy() for w in layer.weights] for layer in self.model.network.layers
        }


@pytest.mark.slow
def test_init_from_copies_freezes_and_learns(tmp_path, source):
    at_start = WeightsAtStart()
    config = tiny_config(tmp_path, epochs=3, init_from=source, freeze=("conv1", "conv2"),
                         learning_rate=0.01, dropout=0.0, seed=2)  # fmt: skip
    run(config, tf.distribute.get_strategy(), _two_class_datasets(), callbacks=[at_start])
    before = load_run(source, "best").model
    after = load_run(str(tmp_path), "last").model
    for name in LAYERS:  # Every matching layer started as the source's.
        for ours, theirs in zip(at_start.weights[name], before.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    for name in ("conv1", "conv2"):  # Frozen: unchanged by three epochs.
        for ours, theirs in zip(
            after.get_layer(name).get_weights(), before.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    assert not np.array_equal(
        after.get_layer("conv3").kernels[0], before.get_layer("conv3").kernels[0]
    )
    assert after.get_layer("fc8").kernels[0].shape[-1] == 1  # Two classes over two columns.
    with open(tmp_path / "run.json") as f:
        assert json.load(f)["new_layers"] == ["fc8"]
    rows = open(tmp_path / "history.csv").read().splitlines()
    header = rows[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    assert losses[-1] < losses[0]


def test_loaded_layers_learn_slower_than_new_ones(tmp_path, source):
    from alexnet_keras.training import trainer

    config = tiny_config(
        tmp_path, epochs=1, init_from=source, fine_tune_lr_factor=0.25, dropout=0.0
    )
    model = trainer.compile_alexnet(config, 2, tf.distribute.get_strategy())
    trainer._start_from(model, config, None)
    scales = dict(zip(model.optimizer._paths, model.optimizer._lr_scales))
    assert scales["conv3/kernel_0"] == scales["fc7/bias_1"] == 0.25
    assert scales["fc8/kernel_0"] == scales["fc8/bias_1"] == 1.0


@pytest.mark.slow
def test_mismatched_network_and_unknown_layer_are_refused(tmp_path, source):
    other_size = tiny_config(tmp_path / "a", image_size=99, init_from=source, dropout=0.0)
    with pytest.raises(ValueError, match="layer fc6 has weights"):
        run(other_size, tf.distribute.get_strategy(), _two_class_datasets())
    with pytest.raises(ValueError, match="--freeze=conv9 is invalid"):
        run(tiny_config(tmp_path / "b", freeze=("conv9",)), tf.distribute.get_strategy(),
            tiny_datasets())  # fmt: skip
    with pytest.raises(ValueError, match="--init_from=.*missing"):
        tiny_config(tmp_path / "c", init_from=os.path.join(source, "missing"))


@pytest.fixture(scope="module")
def caffe_source(tmp_path_factory):
    """A run directory as the Caffe importer writes one: Caffe's LRN, inverted dropout."""
    model_dir = str(tmp_path_factory.mktemp("caffe_import"))
    config = tiny_config(model_dir, lrn_form="caffe", dropout_form="inverted")
    model = build_alexnet(len(CLASSES), **config.model_kwargs())
    run_writer.write_run_dir(model_dir, model, config, CLASSES, stats.IMAGENET, {})
    return model_dir


@pytest.mark.slow
def test_fine_tuning_a_caffe_import_keeps_its_lrn_or_refuses(tmp_path, caffe_source):
    """The README's recipe: the command line takes Caffe's LRN and dropout form from the source
    (and run.json says so); a run that sets the paper's instead is refused, naming the flags."""
    flag_values = flags.FlagValues()
    train_cli.define_flags(flag_values)
    flag_values(["train", f"--init_from={caffe_source}"])  # No --lrn_form, no --dropout_form.
    config = train_cli.with_source_settings(
        tiny_config(tmp_path / "a", init_from=caffe_source), flag_values
    )
    assert (config.lrn_form, config.dropout_form) == ("caffe", "inverted")
    run(config, tf.distribute.get_strategy(), tiny_datasets())
    with open(tmp_path / "a" / "run.json") as f:
        inherited = json.load(f)["init_from_settings"]
    assert (inherited["lrn_form"], inherited["dropout_form"]) == ("caffe", "inverted")
    assert load_run(str(tmp_path / "a"), "last").model.get_layer("lrn1").bias == 1.0  # Caffe's k.
    flag_values(["train", f"--init_from={caffe_source}", "--lrn_form=paper"])
    kept = train_cli.with_source_settings(
        dataclasses.replace(config, lrn_form="paper"), flag_values
    )
    assert kept.lrn_form == "paper"  # Set on the command line: the run refuses it, below.
    with pytest.raises(ValueError, match="trained with --lrn_form=caffe; this run has --lrn_form"):
        run(dataclasses.replace(kept, model_dir=str(tmp_path / "b")),
            tf.distribute.get_strategy(), tiny_datasets())  # fmt: skip
    assert not os.path.exists(tmp_path / "b")  # Refused before any work.


def test_the_paper_dropouts_rate_follows_the_source_and_a_keras_file_says_what_its_run_does(
    tmp_path, caffe_source
):
    """Under the paper's dropout the rate sets fc7's and fc8's test-time scale (1 - rate), so it
    is the source's unless set, and another is refused; under the inverted form it is free. A
    source's best.keras copied out of its run gives the run directory's settings and weights."""
    paper = str(tmp_path / "paper")
    config = tiny_config(paper, dropout=0.3)
    assert config.dropout_form == "paper"
    model = build_alexnet(len(CLASSES), **config.model_kwargs())
    run_writer.write_run_dir(paper, model, config, CLASSES, stats.IMAGENET, {})
    flag_values = flags.FlagValues()
    train_cli.define_flags(flag_values)
    flag_values(["train", f"--init_from={paper}"])
    taken = train_cli.with_source_settings(
        tiny_config(tmp_path / "a", init_from=paper), flag_values
    )
    assert taken.dropout == 0.3
    refused = dataclasses.replace(taken, dropout=0.5)
    with pytest.raises(ValueError, match=r"trained with --dropout=0.3; this run has --dropout=0.5"):
        fine_tune.check_settings(refused)
    inverted = tiny_config(
        tmp_path / "b", init_from=caffe_source, lrn_form="caffe", dropout_form="inverted",
        dropout=0.2,
    )  # fmt: skip
    assert "dropout" not in fine_tune.check_settings(inverted)
    for source in (paper, caffe_source):
        alone = str(tmp_path / f"{os.path.basename(source)}.keras")
        shutil.copyfile(run_files.model_file(source), alone)
        assert fine_tune.source_settings(alone) == fine_tune.source_settings(source)
        ours, theirs = fine_tune.source_model(source), fine_tune.source_model(alone)
        for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
