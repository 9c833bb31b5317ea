"""End-to-end training: one device, mirrored and towers on two logical CPUs, and learning."""

import dataclasses
import json
import os
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from train_helpers import (
    SIZE,
    run_env,
    run_train,
    ten_distinct_crops,
    tiny_arrays,
    tiny_config,
    tiny_datasets,
    write_tiny_fashion_mnist,
)

from alexnet_keras import constants
from alexnet_keras.data import stats
from alexnet_keras.kernels import winograd
from alexnet_keras.run_dir import load_run
from alexnet_keras.training import callbacks as cb
from alexnet_keras.training import evaluation
from alexnet_keras.training.datasets import Datasets
from alexnet_keras.training.device_input import sends_uint8
from alexnet_keras.training.trainer import run

METRIC_KEYS = {"top1_error", "top5_error", "top1_accuracy", "top5_accuracy", "examples", "crops"}


def _checkpoint_steps(model_dir):
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []


def _assert_run_outputs(model_dir, metrics, final_step):
    assert METRIC_KEYS <= set(metrics)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f) == metrics  # What the run returned is what it wrote.
    assert metrics["examples"] == 16
    assert max(_checkpoint_steps(model_dir)) == final_step
    for name in ("last.keras", "config.json", "class_names.json", "stats.json", "history.csv"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    history = open(os.path.join(model_dir, "history.csv")).read().splitlines()
    header, last = history[0].split(","), history[-1].split(",")
    assert np.isfinite(float(last[header.index("loss")]))
    assert "learning_rate" in header
    assert os.listdir(os.path.join(model_dir, "logs"))  # TensorBoard event files.


@pytest.mark.slow
def test_one_device(tmp_path, monkeypatch):
    # The run trains with the kernels --kernels names (every one, whatever this CPU would pick),
    # handed to the layers before anything is traced; dropout draws per-replica masks. At the
    # paper's 227 px, so conv3-conv5 run on 13x13 maps, where Winograd applies (MIN_SIZE).
    seen, winograd_maps = [], []
    record = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.extend(
            layer.name for layer in record.model.network.layers if getattr(layer, "fast_call", None)
        )
    )
    conv3x3 = winograd.conv3x3
    monkeypatch.setattr(
        winograd, "conv3x3", lambda x, k: winograd_maps.append(x.shape[1:3]) or conv3x3(x, k)
    )
    config = tiny_config(tmp_path, epochs=2, image_size=227, kernels=",".join(constants.KERNELS))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    metrics = run(config, strategy, tiny_datasets(steps=3, size=227), callbacks=[record])
    _assert_run_outputs(tmp_path, metrics, final_step=6)
    assert seen == [
        "conv1", "lrn1", "conv2", "lrn2", "conv3", "conv4", "conv5", "fc6", "drop6", "fc7",
        "drop7", "fc8",
    ]  # fmt: skip
    assert len(winograd_maps) >= 3 and set(winograd_maps) == {(13, 13)}  # conv3-conv5, traced.


@pytest.mark.slow
@pytest.mark.parametrize("distribution", ["one_device", "mirrored"])
def test_uint8_stream_trains_exactly_as_its_float32_images(tmp_path, distribution):
    """--input_dtype=uint8: the step casts the crops and adds their shifts on each replica's
    device; the run ends bit for bit where the same images sent as float32 end."""
    images, labels = tiny_arrays()
    crops = np.clip(images + 128, 0, 255).round().astype(np.uint8)
    shifts = np.random.default_rng(3).normal(-120, 10, (len(crops), 3)).astype(np.float32)
    as_float32 = crops.astype(np.float32) + shifts[:, None, None, :]  # The host's float32 path.
    devices = ("/cpu:0", "/cpu:1") if distribution == "mirrored" else ("/cpu:0",)
    weights = {}
    for name, train in (("float32", (as_float32, labels)), ("uint8", ((crops, shifts), labels))):
        stream = tf.data.Dataset.from_tensor_slices(train).repeat().batch(8)
        datasets = dataclasses.replace(
            tiny_datasets(steps=3), train=stream, uint8_pixels=name == "uint8"
        )
        config = tiny_config(tmp_path / name, seed=2, distribution=distribution, devices=devices)
        strategy = (tf.distribute.MirroredStrategy(list(devices)) if distribution == "mirrored"
                    else tf.distribute.OneDeviceStrategy("/cpu:0"))  # fmt: skip
        run(config, strategy, datasets)
        weights[name] = keras.saving.load_model(tmp_path / name / "last.keras").get_weights()
    moved = [np.abs(w).max() > 0 for w in weights["uint8"]]
    assert all(moved)
    for ours, reference in zip(weights["uint8"], weights["float32"]):
        np.testing.assert_array_equal(ours, reference)


def test_input_dtype_auto_is_uint8_unless_a_mean_image_needs_float32(tmp_path):
    with_mean_image = dataclasses.replace(stats.IMAGENET, mean_image=((stats.IMAGENET.mean_rgb,),))
    assert sends_uint8(tiny_config(tmp_path, input_dtype="auto"), stats.IMAGENET)
    assert not sends_uint8(tiny_config(tmp_path, input_dtype="auto"), with_mean_image)
    assert sends_uint8(tiny_config(tmp_path, input_dtype="uint8"), stats.IMAGENET)
    assert not sends_uint8(tiny_config(tmp_path, input_dtype="float32"), stats.IMAGENET)
    with pytest.raises(ValueError, match="--input_dtype=uint8 is invalid with a mean image"):
        sends_uint8(tiny_config(tmp_path, input_dtype="uint8"), with_mean_image)
    with pytest.raises(ValueError, match="--input_dtype=int8 is invalid"):
        tiny_config(tmp_path, input_dtype="int8")


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_counts(probabilities, labels):
    """(top-1, top-5) correct counts of [n, classes] probabilities, by sorting in NumPy."""
    ranks = np.argsort(-probabilities, axis=1, kind="stable")
    k = min(5, probabilities.shape[1])
    return int((ranks[:, 0] == labels).sum()), int((ranks[:, :k] == labels[:, None]).any(1).sum())


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(tmp_path):
    """The final 10-crop evaluation of a mirrored run, on 10 distinct crops per image, against a
    NumPy average of the saved model's per-crop softmax and a NumPy top-1 count (top-5 of these
    4 classes is every class; the 10-class test below checks it)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # lr 0.001: 3 steps leave unsaturated answers, so the 10 crops can vote for different classes.
    config = tiny_config(tmp_path, distribution="mirrored", devices=("/cpu:0", "/cpu:1"), seed=2,
                         learning_rate=0.001)  # fmt: skip
    metrics = run(config, strategy, tiny_datasets(steps=3, ten_crop=True))
    _assert_run_outputs(tmp_path, metrics, final_step=3)
    assert metrics["crops"] == 10
    images, labels = tiny_arrays()
    crops = ten_distinct_crops(images)
    model = keras.saving.load_model(os.path.join(tmp_path, "best.keras"))  # What it evaluated.
    logits = model.predict(crops.reshape(-1, SIZE, SIZE, 3), verbose=0)
    per_crop = _softmax(logits).reshape(16, 10, -1)
    probabilities = per_crop.mean(axis=1)
    top1, _ = _numpy_counts(probabilities, labels)
    assert metrics["top1_accuracy"] == top1 / 16
    ranked = -np.sort(-probabilities, axis=1)
    assert (ranked[:, 0] - ranked[:, 1]).min() > 1e-3  # No near-tie for rounding to flip.
    votes = per_crop.argmax(axis=-1)
    assert (votes != votes[:, :1]).any()  # The crops disagree: averaging is what is tested.


def _linear_model(classes, shape, seed):
    """A fixed linear classifier, so the reference logits are one NumPy matmul."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.3, (int(np.prod(shape)), classes)).astype(np.float32)
    bias = rng.normal(0, 0.3, classes).astype(np.float32)
    model = keras.Sequential(
        [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes)]
    )
    model.layers[-1].set_weights([kernel, bias])
    return model, kernel.astype(np.float64), bias.astype(np.float64)


def test_ten_crop_evaluation_is_the_mean_softmax_of_ten_distinct_crops():
    """evaluate_model / crop_probabilities on 13 images x 10 different crops, 10 classes (so top-5
    can miss), batches of 5 (a short last one): NumPy mean of the per-crop softmax to 1e-6, and
    top-1/top-5 counts from NumPy, with labels placed at known ranks of that reference."""
    n, classes, shape = 13, 10, (4, 4, 3)
    model, kernel, bias = _linear_model(classes, shape, seed=0)
    crops = np.random.default_rng(1).normal(0, 1, (n, 10, *shape)).astype(np.float32)
    per_crop = _softmax(crops.reshape(n, 10, -1).astype(np.float64) @ kernel + bias)
    expected = per_crop.mean(axis=1)
    ranks = np.argsort(-expected, axis=1)
    assert np.diff(-np.sort(-expected, axis=1), axis=1).max() < -1e-4  # No near-ties to flip.
    true_rank = np.arange(n) % 7  # Ranks 0 (top-1), 1..4 (top-5 only) and 5, 6 (neither).
    labels = ranks[np.arange(n), true_rank].astype(np.int32)
    np.testing.assert_allclose(
        evaluation.crop_probabilities(model, tf.constant(crops)).numpy(), expected, atol=1e-6
    )
    dataset = tf.data.Dataset.from_tensor_slices((crops, labels)).batch(5)
    metrics = evaluation.evaluate_model(model, dataset, "test")
    assert (metrics["crops"], metrics["examples"], metrics["split"]) == (10, n, "test")
    assert metrics["top1_accuracy"] == pytest.approx(np.sum(true_rank == 0) / n)  # 2 of 13.
    assert metrics["top5_accuracy"] == pytest.approx(np.sum(true_rank < 5) / n)  # 10 of 13.
    assert _numpy_counts(expected, labels) == (2, 10)
    assert metrics["top1_error"] == pytest.approx(11 / 13)
    # The 1e-6 check can fail: the mean of the logits, or one crop alone, is far off.
    mean_logits = _softmax(crops.reshape(n, 10, -1).astype(np.float64).mean(1) @ kernel + bias)
    assert np.abs(mean_logits - expected).max() > 1e-2
    assert np.abs(per_crop[:, 0] - expected).max() > 1e-2
    # The centre-crop path ([batch, h, w, 3]): one crop, its softmax.
    centre = tf.data.Dataset.from_tensor_slices((crops[:, 0], labels)).batch(5)
    metrics = evaluation.evaluate_model(model, centre, "test")
    assert metrics["crops"] == 1
    top1, top5 = _numpy_counts(per_crop[:, 0], labels)
    assert (metrics["top1_accuracy"], metrics["top5_accuracy"]) == (top1 / n, top5 / n)


@pytest.mark.slow  # Two fresh processes that import TensorFlow.
def test_towers_run_evaluates_and_exports_on_a_one_device_machine(tmp_path):
    """A towers run (weights pinned to two devices) works where there is only one device."""
    model_dir = tmp_path / "run"
    config = tiny_config(model_dir, distribution="towers", devices=("/cpu:0", "/cpu:1"))
    metrics = run(config, tf.distribute.get_strategy(), tiny_datasets(steps=2))
    _assert_run_outputs(model_dir, metrics, final_step=2)
    for name in ("best.keras", "last.keras"):  # The network as the layers say it: no devices.
        with zipfile.ZipFile(model_dir / name) as archive:
            saved = archive.read("config.json").decode()
        assert "devices" not in saved and "cpu:1" not in saved.lower(), name
    write_tiny_fashion_mnist(tmp_path / "data", n_train=16, n_test=8)
    env = run_env(tmp_path / "data")  # Fresh processes: no conftest split, one CPU device.
    # The evaluation's process first prints how many CPU devices it sees (one: no split).
    devices_then_run = (
        "import runpy, sys, tensorflow as tf; print(len(tf.config.list_logical_devices('CPU'))); "
        "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')"
    )
    commands = [
        [sys.executable, "-c", devices_then_run, "alexnet_keras.evaluate",
         f"--model_dir={model_dir}", "--checkpoint=last", f"--output={tmp_path}/eval.json"],
        [sys.executable, "-m", "alexnet_keras.cli.export", f"--model_dir={model_dir}",
         "--checkpoint=last", f"--export_base={tmp_path}/exports", "--nowarmup"],
    ]  # fmt: skip
    results = [run_train(command, env) for command in commands]
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    assert results[0].stdout.splitlines()[0] == "1"
    with open(tmp_path / "eval.json") as f:
        assert json.load(f)["examples"] == 8
    images = tf.constant(tiny_arrays(n=2)[0] + 120.0)  # 0..255-ish pixels, as served.
    served = tf.saved_model.load(str(tmp_path / "exports" / "alexnet" / "1"))
    probabilities = served.signatures["predict_images"](images=images)["probabilities"]
    reference = load_run(str(model_dir), "last")
    expected = tf.nn.softmax(reference.model(images - tf.constant(reference.stats.mean_rgb)))
    np.testing.assert_allclose(probabilities.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["none", "bfloat16"])
def test_overfits_a_tiny_fixed_batch(tmp_path, precision):
    """The whole loop learns, in float32 and in mixed bfloat16 (LRN, logits in float32)."""
    images, labels = tiny_arrays(n=8)
    batch = tf.data.Dataset.from_tensors((images, labels))
    datasets = Datasets(batch.repeat(), batch, batch, ("a", "b", "c", "d"), 40, "train")
    config = tiny_config(tmp_path, dropout=0.0, epochs=1, batch_size=8, learning_rate=0.01,
                         weight_decay=0.0, checkpoint_every_steps=100, seed=0,
                         mixed_precision=precision)  # fmt: skip
    metrics = run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), datasets)
    history = open(os.path.join(tmp_path, "history.csv")).read().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    assert float(row[header.index("val_loss")]) < 0.05
    assert metrics["top1_accuracy"] == 1.0


def test_nan_loss_stops_with_clear_message_and_keeps_good_checkpoint(tmp_path):
    images, labels = tiny_arrays(n=8)
    # A NaN sample weight makes the 4th step's loss NaN (CPU kernels in graph mode clamp
    # non-finite activations, so NaN images would not reliably do it).
    weights = np.ones(8, np.float32)
    good = tf.data.Dataset.from_tensors((images, labels, weights))
    bad = tf.data.Dataset.from_tensors((images, labels, weights * np.nan))
    train = good.repeat(3).concatenate(bad.repeat())
    plain = tf.data.Dataset.from_tensors((images, labels))
    datasets = Datasets(train, plain, plain, ("a", "b", "c", "d"), 6, "train")
    config = tiny_config(tmp_path, checkpoint_every_steps=1)
    with pytest.raises(FloatingPointError, match="loss became non-finite at step 4"):
        run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), datasets)
    assert max(_checkpoint_steps(tmp_path)) == 3


@pytest.mark.parametrize(
    "errors,patience,max_drops,expected",
    [
        ([0.9, 0.8, 0.7], 2, 3, 0),  # Always improving.
        ([0.9, 0.9, 0.9], 2, 3, 1),  # Two flat epochs: one drop.
        ([0.9, 0.95, 0.92, 0.85, 0.86], 2, 3, 1),  # Drop, then a new best resets waiting.
        ([0.9] * 20, 1, 3, 3),  # Never more than max_drops.
        ([0.9] * 20, 3, 2, 2),
    ],
)
def test_plateau_drops(errors, patience, max_drops, expected):
    assert cb.plateau_drops(errors, patience, max_drops) == expected


def test_learning_rate_controller_recomputes_rate_after_resume(tmp_path):
    import keras

    from alexnet_keras.training.optimizer import PaperSGD

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(PaperSGD(0.01), "mse")
    controller = cb.LearningRateController(0.01, "plateau", str(tmp_path), patience=2, max_drops=3)
    controller.set_model(model)
    rates = []
    for epoch, top1 in enumerate([0.5, 0.5, 0.5, 0.6, 0.6, 0.6]):
        controller.on_epoch_begin(epoch)
        rates.append(float(model.optimizer.learning_rate))
        controller.on_epoch_end(epoch, {"val_top1": top1})
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.01, 0.001, 0.001, 0.001])
    resumed = cb.LearningRateController(0.01, "plateau", str(tmp_path), patience=2, max_drops=3)
    resumed.set_model(model)
    assert resumed.rate_for_epoch(6) == pytest.approx(0.0001)
    assert resumed.rate_for_epoch(3) == pytest.approx(0.001)
    step = cb.LearningRateController(0.01, "step", str(tmp_path), boundaries=(2, 4))
    assert [step.rate_for_epoch(e) for e in range(5)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001]
    )


def test_auto_precision_follows_the_cpu(monkeypatch):
    from alexnet_keras import cpu
    from alexnet_keras.training import precision as trainer

    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: True)
    assert trainer.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: False)
    assert trainer.resolve_precision("auto") == "none"
    assert trainer.resolve_precision("float16") == "float16"


@pytest.mark.parametrize("mixed", ["float16", "bfloat16", "none"])
def test_float16_without_a_gpu_warns_that_its_sums_come_out_short(mixed_policy, capsys, mixed):
    """One printed line for float16 on a machine without GPUs (TF's CPU kernels sum float16 in
    float16: BUILD_NOTES, "Training"), none otherwise. `mixed_policy` restores float32."""
    from alexnet_keras.training import precision

    precision.set_precision(mixed)
    warns = mixed == "float16" and not tf.config.list_physical_devices("GPU")
    assert capsys.readouterr().out.splitlines() == ([precision.FLOAT16_ON_CPU] if warns else [])
