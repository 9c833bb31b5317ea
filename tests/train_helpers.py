"""Tiny data and configs for training tests: a few 67x67 images, 4 classes, a few steps, and
fc6/fc7 of FC_UNITS units (no tested property depends on the paper's 4096: ~2.5M parameters and
~30 MB checkpoints instead of ~22M and ~173 MB)."""

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import tensorflow as tf

from alexnet_keras.config import TrainConfig
from alexnet_keras.data import pipeline
from alexnet_keras.training.datasets import Datasets

SIZE = 67
CLASSES = ("a", "b", "c", "d")
FC_UNITS = 256
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_arrays(n=16, seed=0, size=SIZE):
    """Images whose class is visible (a bright quadrant), so a few steps can learn it."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.normal(0, 20, size=(n, size, size, 3)).astype(np.float32)
    half = size // 2
    for i, label in enumerate(labels):
        y, x = divmod(int(label), 2)
        images[i, y * half : (y + 1) * half, x * half : (x + 1) * half] += 100.0
    return images, labels.astype(np.int32)


def ten_distinct_crops(images, seed=1):
    """[n, 10, ...] crops that all differ: 5 noisy copies of each image, then their mirrors, like
    the paper's 5 windows and their reflections (a mirror moves the bright quadrant)."""
    rng = np.random.default_rng(seed)
    noisy = images[:, None] + rng.normal(0, 20, size=(len(images), 5) + images.shape[1:])
    return np.concatenate([noisy, noisy[:, :, :, ::-1]], axis=1).astype(np.float32)


def tiny_datasets(batch=8, steps=3, ten_crop=False, size=SIZE):
    images, labels = tiny_arrays(size=size)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch)
    validation = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
    crops = ten_distinct_crops(images) if ten_crop else images
    evaluation = tf.data.Dataset.from_tensor_slices((crops, labels)).batch(batch)
    streams = (pipeline.finish(ds) for ds in (train, validation, evaluation))  # As a run's.
    return Datasets(*streams, CLASSES, steps, "test")


def tiny_config(model_dir, **overrides):
    values = dict(
        dataset="fashion_mnist",
        model_dir=str(model_dir),
        image_size=SIZE,
        batch_size=8,
        epochs=1,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        input_scale=1 / 64,
        lr_schedule="constant",
        checkpoint_every_steps=2,
        distribution="one_device",
        devices=("/cpu:0",),
        mixed_precision="none",
        fc_units=FC_UNITS,
    )
    values.update(overrides)
    return TrainConfig(**values)


def write_idx(directory, split, images, labels):
    """Fashion-MNIST's real file format: gzipped IDX (magic 2051 images, 2049 labels)."""
    prefix = "train" if split == "train" else "t10k"
    os.makedirs(directory, exist_ok=True)
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.astype(np.uint8).tobytes())
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_tiny_fashion_mnist(directory, n_train=64, n_test=16):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):  # A class-dependent bright row band.
            images[i, 2 * label : 2 * label + 3] = 250
        write_idx(directory, split, images, labels)


def train_command(model_dir, *extra):
    return [
        sys.executable, "-m", "alexnet_keras.train", "--dataset=fashion_mnist",
        f"--model_dir={model_dir}", "--image_size=67", "--batch_size=8",
        "--kernel_initializer=he_normal", "--bias_initializer=zeros", "--input_scale=0.015625",
        "--lr_schedule=constant", "--noten_crop_eval", "--distribution=one_device",
        f"--fc_units={FC_UNITS}", *extra,
    ]  # fmt: skip


# Runs a command's module (or script) as __main__, then prints whether TensorFlow was imported.
_REPORTS_TENSORFLOW = """
import runpy, sys
target = sys.argv.pop(1)
sys.argv[0] = target
try:
    (runpy.run_path if target.endswith(".py") else runpy.run_module)(target, run_name="__main__")
finally:
    print("tensorflow loaded:", "tensorflow" in sys.modules)
"""


def command_reporting_tensorflow(target, *args):
    """`python -m target ARGS` (or `python target.py ARGS`) whose last stdout line says
    `tensorflow loaded: True` or `False`: for the checks that must come before TF starts."""
    return [sys.executable, "-c", _REPORTS_TENSORFLOW, target, *args]


def run_env(fashion_dir, **extra):
    env = dict(os.environ, ALEXNET_FASHION_MNIST_DIR=str(fashion_dir), TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_train(args, env, timeout=300):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
