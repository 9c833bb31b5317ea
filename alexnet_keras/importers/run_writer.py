"""Writes imported weights as a run directory, exactly what training writes for the commands that
read one (export, evaluate, predict, visualize): config.json, class_names.json, stats.json,
best.keras and last.keras, plus import.json recording where the weights came from.

The directory is written into a hidden temporary sibling and renamed into place, so a failure at
any point leaves nothing behind, and an existing non-empty --model_dir is refused before anything
is read or written.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np

import alexnet_keras
from alexnet_keras import importers, keras_file, run_files
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import labels
from alexnet_keras.data import stats as stats_lib
from alexnet_keras.importers import caffe, imported, torchvision
from alexnet_keras.model import build_alexnet

IMPORT_FILE = "import.json"
IMPORT_FORMAT = "alexnet_keras.import/v1"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """The run directory written and what went into it."""

    model_dir: str
    config: TrainConfig
    num_classes: int
    conventions: tuple[str, ...]


def import_weights(
    weights_format: str,
    weights: str,
    model_dir: str,
    mean_file: str | None = None,
    class_names: str | None = None,
    dataset: str = "imagenet2012",
) -> ImportResult:
    """Reads `weights` (Caffe bvlc_alexnet or torchvision alexnet) and writes a run directory.

    Args:
        weights_format: "caffe" or "torchvision".
        weights: the .caffemodel, or the .pth/.safetensors state_dict.
        model_dir: the run directory to create; must not exist or be empty.
        mean_file: caffe only: a mean image (.binaryproto or .npy, BGR [3, H, W]) to subtract
            instead of ilsvrc_2012_mean's per-channel values.
        class_names: a .json list or a text file of one name per line, in fc8's order; default
            (1000 classes only): ImageNet's WordNet ids in sorted order, both files' label order.
        dataset: the dataset config.json names (evaluate reads it), for fine-tuned weights.

    Raises:
        ValueError, FileNotFoundError, FileExistsError, ImportError: one line naming the input.
    """
    importers.check_format(weights_format)
    _check_empty(model_dir)
    if weights_format == "caffe":
        net = caffe.load(weights, mean_file)
    elif mean_file is not None:
        raise ValueError(
            f"--mean_file={mean_file} is only for --format=caffe: torchvision's input convention "
            "is its published per-channel mean and std"
        )
    else:
        net = torchvision.load(weights)
    names = _class_names(class_names, net.num_classes)
    config = TrainConfig(
        dataset=dataset,
        model_dir=model_dir,
        image_size=net.image_size,
        resize_size=net.resize_size,
        groups=net.groups,
        use_lrn=net.use_lrn,
        architecture=net.architecture,
        lrn_form=net.lrn_form,
        dropout_form="inverted",  # Caffe's and torch's dropout, which these weights trained with.
        input_scale=1.0,
    )
    model = _build(net, config)
    record = {
        "format": IMPORT_FORMAT,
        "source_format": weights_format,
        "weights_file": os.path.abspath(weights),
        "weights_sha256": _sha256(weights),
        "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "alexnet_keras_version": alexnet_keras.__version__,
        "num_classes": net.num_classes,
        "class_names": os.path.abspath(class_names) if class_names else "ImageNet WordNet ids",
        "conventions": list(net.conventions),
        **net.details,
    }
    write_run_dir(model_dir, model, config, names, net.stats, record)
    return ImportResult(model_dir, config, net.num_classes, net.conventions)


def write_run_dir(
    model_dir: str,
    model: keras.Model,
    config: TrainConfig,
    class_names: Sequence[str],
    data_stats: stats_lib.DatasetStats,
    record: dict,
) -> None:
    """Writes the run's files into a temporary sibling of `model_dir`, then renames it there."""
    _check_empty(model_dir)
    final = os.path.abspath(model_dir)
    created = _make_dirs(os.path.dirname(final))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.import-", dir=os.path.dirname(final))
    try:
        with open(os.path.join(tmp, run_files.CONFIG_FILE), "w") as f:
            f.write(config.to_json())
        _write_json(os.path.join(tmp, run_files.CLASS_NAMES_FILE), list(class_names))
        stats_lib.save_stats(data_stats, os.path.join(tmp, run_files.STATS_FILE))
        best = os.path.join(tmp, run_files.BEST_FILE)
        keras_file.save(model, best, tmp)
        # The same network twice: a copy, not a second save (or a link that a later save into
        # one of them would overwrite in both).
        shutil.copyfile(best, os.path.join(tmp, run_files.LAST_FILE))
        _write_json(os.path.join(tmp, IMPORT_FILE), record)
        os.chmod(tmp, 0o755)  # Not mkdtemp's 0700: readable like a training run's directory.
        os.rename(tmp, final)  # POSIX rename replaces an empty directory.
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:  # Deepest first; only the ones made here.
            if os.path.isdir(directory) and not os.listdir(directory):
                os.rmdir(directory)
        raise


def _check_empty(model_dir: str) -> None:
    if not model_dir:
        raise ValueError("--model_dir is required: the run directory to create")
    if os.path.exists(model_dir) and not (os.path.isdir(model_dir) and not os.listdir(model_dir)):
        raise FileExistsError(
            f"--model_dir={model_dir} exists and is not an empty directory: pick a new one "
            "(nothing was written)"
        )


def _class_names(path: str | None, num_classes: int) -> tuple[str, ...]:
    """The names from `path`, or ImageNet's WordNet ids for a 1000-class net."""
    if path is None:
        if num_classes != len(labels.load_imagenet_labels()):
            raise ValueError(
                f"fc8 has {num_classes} classes, not ImageNet's 1000 (a fine-tuned net?): pass "
                f"--class_names=FILE with {num_classes} names in the order of fc8's outputs"
            )
        # Sorted WordNet ids: the label order of Caffe's synsets.txt, torchvision's ImageFolder
        # and TFDS's imagenet2012 (tests/test_importers.py checks the last).
        return tuple(labels.load_imagenet_labels())
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--class_names={path} does not exist (or is not a file)")
    with open(path) as f:
        if path.endswith(".json"):
            names = json.load(f)
        else:
            names = [line.strip() for line in f if line.strip()]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"--class_names={path} is invalid: expected a JSON list of strings")
    if len(names) != num_classes:
        raise ValueError(
            f"--class_names={path} has {len(names)} names but fc8 has {num_classes} outputs"
        )
    return tuple(names)


def _build(net: imported.ImportedNet, config: TrainConfig) -> keras.Model:
    """The float32 network of `config` holding the imported weights, column by column."""
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_alexnet(num_classes=net.num_classes, **config.model_kwargs())
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    for name, (kernel, bias) in net.layers.items():
        layer = model.get_layer(name)
        splits = np.cumsum([k.shape[-1] for k in layer.kernels])[:-1]  # Column widths.
        for variables, value in ((layer.kernels, kernel), (layer.biases, bias)):
            for variable, part in zip(variables, np.split(value, splits, axis=-1), strict=True):
                variable.assign(part)
    return model


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: str, value: object) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _make_dirs(path: str) -> list[str]:
    """Creates `path` and missing parents; returns the directories created, deepest first."""
    created = []
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    for directory in reversed(created):
        os.mkdir(directory)
    return created
