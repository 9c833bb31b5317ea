"""Starting a run from another run's (or an imported) network: `--init_from`, `--freeze`.

Layers are matched by name (the stable names conv1..fc8). A layer whose weights have the same
shapes is copied; the classifier (fc8) is left at its fresh initialization when the class count
differs, as in Caffe's fine-tuning recipe; any other mismatch is an error naming the layer.
Copied weights keep the function they were trained for only under the same settings without
weights (the LRN's form, the input scale, the dropout form, and in the paper's form the dropout
rate, whose 1 - rate scales fc7's and fc8's inputs at test time): those must equal the source's
(`check_settings`); the command line takes the source's where no flag sets them.
"""

from __future__ import annotations

import os

import keras
from absl import logging

from alexnet_keras import keras_file, run_dir, run_files
from alexnet_keras.config import TrainConfig

CLASSIFIER = "fc8"
# The settings that change what copied weights compute (the image size only changes fc6's input
# size, which load_matching_layers refuses by name).
FUNCTION_SETTINGS = ("architecture", "groups", "use_lrn", "lrn_form", "input_scale", "dropout_form")


def source_settings(init_from: str) -> dict:
    """FUNCTION_SETTINGS of --init_from (and `dropout` under the paper's dropout): its run's
    config.json, or the .keras file's layers."""
    if os.path.isdir(init_from):
        config = run_files.load_config(init_from)
        found = {name: getattr(config, name) for name in (*FUNCTION_SETTINGS, "dropout")}
    elif not os.path.isfile(init_from):
        raise FileNotFoundError(
            f"--init_from={init_from} is neither a run directory nor a .keras file."
        )
    else:
        try:
            found = keras_file.settings(init_from)
        except ValueError as error:
            raise ValueError(f"--init_from={init_from}: {error}") from None
    names = FUNCTION_SETTINGS + (("dropout",) if found.get("dropout_form") == "paper" else ())
    return {name: found[name] for name in names if name in found}


def check_settings(config: TrainConfig) -> dict:
    """Refuses a run whose settings without weights differ from --init_from's; returns those."""
    source = source_settings(config.init_from)
    different = [name for name, value in source.items() if getattr(config, name) != value]
    if different:
        theirs = " ".join(f"--{name}={source[name]}" for name in different)
        ours = " ".join(f"--{name}={getattr(config, name)}" for name in different)
        raise ValueError(
            f"--init_from={config.init_from} was trained with {theirs}; this run has {ours}. Its "
            f"weights compute another function under these: pass {theirs}."
        )
    return source


def source_model(init_from: str) -> keras.Model:
    """The network of a run directory (its best.keras, rebuilt from its config) or a .keras file."""
    if os.path.isdir(init_from):
        config = run_files.load_config(init_from)
        class_names = run_files.load_class_names(init_from)
        path = run_files.model_file(init_from, "best")
        return run_dir.load_inference_model(path, config, len(class_names))
    if not os.path.isfile(init_from):
        raise FileNotFoundError(
            f"--init_from={init_from} is neither a run directory nor a .keras file."
        )
    try:
        return keras.saving.load_model(init_from, compile=False)
    except Exception as error:  # Keras raises ValueError, zipfile.BadZipFile, OSError, ...
        raise ValueError(f"--init_from={init_from} cannot be read: {error}") from error


def load_matching_layers(model: keras.Model, source: keras.Model) -> tuple[list[str], list[str]]:
    """Copies every same-named layer's weights from `source`; returns (copied, left as new)."""
    copied, fresh = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            match = source.get_layer(layer.name)
        except ValueError:
            fresh.append(layer.name)
            continue
        ours = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(w.shape) for w in match.weights]
        if ours == theirs:
            layer.set_weights(match.get_weights())
            copied.append(layer.name)
        elif layer.name == CLASSIFIER:
            fresh.append(layer.name)  # Another number of classes: a new classifier.
        else:
            raise ValueError(
                f"--init_from: layer {layer.name} has weights {theirs} there but {ours} here; "
                "the networks differ (image size, groups, architecture)."
            )
    if not copied:
        raise ValueError("--init_from: no layer of that network matches this one.")
    logging.info("Initialised %s from --init_from; new: %s.", copied, fresh or "none")
    return copied, fresh


def check_freeze(names: tuple[str, ...], model: keras.Model) -> None:
    """Refuses `--freeze` names that are not weighted layers of the model."""
    weighted = [layer.name for layer in model.layers if layer.weights]
    unknown = [name for name in names if name not in weighted]
    if unknown:
        raise ValueError(
            f"--freeze={','.join(unknown)} is invalid: expected layers of {', '.join(weighted)}."
        )
