"""A training run's directory: the names of its files and how to read them back.

Training writes it, and evaluate, export, predict, the pictures and the weight importers read it
(an importer writes one, so every command works on imported weights unchanged):

    config.json        the frozen TrainConfig            class_names.json  class names, label order
    stats.json         the mean/PCA the run used         best.keras / last.keras  the network
    history.csv        one row per epoch                 checkpoints/      resumable TF checkpoints
    lr_state.json      validation errors per epoch       metrics.json      the final evaluation
    run.json           the data seed and the precision the run computes in
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import keras
import numpy as np

from alexnet_keras import keras_file, kernels
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import stats as stats_lib
from alexnet_keras.model import build_alexnet

CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"
STATS_FILE = "stats.json"
HISTORY_FILE = "history.csv"
LR_STATE_FILE = "lr_state.json"
RUN_STATE_FILE = "run.json"
METRICS_FILE = "metrics.json"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
MODEL_FILES = {"best": BEST_FILE, "last": LAST_FILE}
CHECKPOINT_DIR = "checkpoints"


def load_config(model_dir: str) -> TrainConfig:
    """The configuration a training run wrote into its model directory."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No training run in --model_dir={model_dir}: {path} does not exist. Train first with "
            "`python -m alexnet_keras.train --model_dir=...`."
        )
    try:
        with open(path) as f:
            return TrainConfig.from_json(f.read())
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not an alexnet_keras run configuration: {error}") from None


def load_class_names(model_dir: str) -> tuple[str, ...]:
    """The run's class names, in label order."""
    path = os.path.join(model_dir, CLASS_NAMES_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No class names in {model_dir}: {path} does not exist.")
    with open(path) as f:
        return tuple(json.load(f))


def load_stats(model_dir: str) -> stats_lib.DatasetStats:
    """The mean/PCA statistics the run trained with."""
    return stats_lib.load_stats(os.path.join(model_dir, STATS_FILE))


def model_file(model_dir: str, checkpoint: str = "best") -> str:
    """Path of the run's `best.keras` or `last.keras` (which need not exist yet)."""
    if checkpoint not in MODEL_FILES:
        raise ValueError(f"--checkpoint must be best or last. Received: {checkpoint!r}")
    return os.path.join(model_dir, MODEL_FILES[checkpoint])


INFERENCE_PRECISIONS = ("float32", "bfloat16")


def load_inference_model(
    checkpoint: str, config: TrainConfig, num_classes: int, precision: str = "float32"
) -> keras.Model:
    """The trained network with no device pins, weights from a `.keras` checkpoint.

    Rebuilt from the run's config rather than deserialized, so a run trained under mixed bfloat16
    serves and evaluates in plain float32 on any device, with the layers' portable kernels (plain
    TF ops, the same whatever machine builds it: `kernels.PORTABLE`); then compared
    with the network the file describes, so nothing that config.json does not say is lost. With
    `precision="bfloat16"` the weights themselves are stored in bfloat16 (no per-call casts of
    61M weights), for CPUs and GPUs with bf16 units; LRN, fc8 (the logits) and the softmax stay
    float32.

    Raises:
        FileNotFoundError / ValueError: naming `checkpoint` when it is missing, corrupt, or holds
            another network than `config` describes.
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"Checkpoint {checkpoint} does not exist. Train first "
            "(`python -m alexnet_keras.train`) or pass --checkpoint=last / --keras_file=PATH."
        )
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(
            f"--serving_precision must be one of {', '.join(INFERENCE_PRECISIONS)}. "
            f"Received: {precision!r}"
        )
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)  # Weights and compute (fc8 stays float32).
    try:
        model = build_alexnet(
            num_classes=num_classes, kernel_policy=kernels.PORTABLE, **config.model_kwargs()
        )
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    different = keras_file.differences(
        keras_file.layer_configs(checkpoint), keras_file.model_layer_configs(model)
    )
    if different:
        raise ValueError(
            f"{checkpoint} holds another network than its run's config.json builds: "
            f"{'; '.join(different)} (config.json: {_function_flags(config)})."
        )
    try:
        model.load_weights(checkpoint)
    except Exception as error:  # Keras raises ValueError, zipfile.BadZipFile, OSError, ...
        raise ValueError(
            f"Cannot load weights from checkpoint {checkpoint}: {type(error).__name__}: {error}. "
            "The file is corrupt or does not match the run's config.json (image_size, groups, "
            "use_lrn, number of classes)."
        ) from error
    return model


def _function_flags(config: TrainConfig) -> str:
    names = ("architecture", "lrn_form", "use_lrn", "groups", "input_scale", "dropout_form")
    return ", ".join(f"--{name}={getattr(config, name)}" for name in names)


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run loaded for inspection: float32 model (no device pins), config, names, stats."""

    model: keras.Model
    config: TrainConfig
    class_names: tuple[str, ...]
    stats: stats_lib.DatasetStats


def load_run(model_dir: str, checkpoint: str = "best") -> Run:
    """Loads `<model_dir>/best.keras` (or last.keras) for inference, with the run's files."""
    config = load_config(model_dir)
    class_names = load_class_names(model_dir)
    model = load_inference_model(model_file(model_dir, checkpoint), config, len(class_names))
    return Run(model, config, class_names, load_stats(model_dir))


def read_history(path: str) -> dict[str, np.ndarray]:
    """history.csv (Keras's CSVLogger) as float columns sorted by epoch.

    A resumed run appends; when an epoch appears twice the later row wins. Empty cells are NaN.
    """
    if os.path.isdir(path):
        path = os.path.join(path, HISTORY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No training history at {path}. Training writes it after the first epoch "
            "(`python -m alexnet_keras.train --model_dir=...`)."
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{path} has no rows or no 'epoch' column; is it a Keras CSVLogger file?")
    by_epoch = {int(float(row["epoch"])): row for row in rows}
    epochs = sorted(by_epoch)
    return {
        name: np.array([_float(by_epoch[e].get(name)) for e in epochs])
        for name in rows[0]
        if name is not None
    }


def _float(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
