"""A training run's directory: the names of its files, and the readers that need no TensorFlow.

Training writes it, and evaluate, export, predict, the pictures and the weight importers read it
(an importer writes one, so every command works on imported weights unchanged):

    config.json        the frozen TrainConfig            class_names.json  class names, label order
    stats.json         the mean/PCA the run used         best.keras / last.keras  the network
    history.csv        one row per epoch                 checkpoints/      resumable TF checkpoints
    lr_state.json      validation errors per epoch       metrics.json      the final evaluation
    run.json           the data seed and the precision the run computes in

Nothing here imports TensorFlow: `evaluate` checks its run, and `visualize curves` reads its
history, before or without it. `run_dir` loads the run's network and statistics.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from alexnet_keras.config import TrainConfig

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


def model_file(model_dir: str, checkpoint: str = "best") -> str:
    """Path of the run's `best.keras` or `last.keras` (which need not exist yet)."""
    if checkpoint not in MODEL_FILES:
        raise ValueError(f"--checkpoint must be best or last. Received: {checkpoint!r}")
    return os.path.join(model_dir, MODEL_FILES[checkpoint])


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
