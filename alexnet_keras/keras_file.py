"""What the network in a `.keras` file computes, read from its config.json without building it.

A run directory records its settings in config.json; a `.keras` file carries them in its layers'
configs. Export, evaluation and fine-tuning read them from the file itself, so a file on its own
loses nothing (Caffe's LRN, an input scale, the dropout form), and compare the file with the
network they rebuild, so a config.json that disagrees with its file is refused, not served.
The files this project writes (`save`) also hold their run's config.json, class_names.json and
stats.json, so a file copied out of its run exports with the run's preprocessing and labels.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile

from alexnet_keras import constants, run_files

# Layer config entries that do not change what the layer computes.
_NOT_THE_FUNCTION = {
    "name",
    "dtype",
    "trainable",
    "seed",
    "noise_shape",
    "devices",
    "merge_columns",
}
_DEFAULTS = {"ColumnDropout": {"form": "inverted"}}  # Files saved before the entry existed.
_WEIGHTS = "model.weights.h5"  # Where a .keras file keeps its weights (Keras's layout).

_RUN = "alexnet_keras/"  # Where a .keras file written by `save` keeps its run's files.
RUN_FILES = (run_files.CONFIG_FILE, run_files.CLASS_NAMES_FILE, run_files.STATS_FILE)

LayerConfigs = dict[str, tuple[str, dict]]  # Layer name -> (class name, config).


def save(model: object, path: str, model_dir: str) -> None:
    """`model.save(path)` atomically, with the RUN_FILES of `model_dir` inside (those it has: a
    multi-worker run's other workers save into directories without them). Keras ignores them."""
    tmp = path + ".tmp.keras"
    model.save(tmp)
    with zipfile.ZipFile(tmp, "a") as archive:
        for name in RUN_FILES:
            if os.path.isfile(os.path.join(model_dir, name)):
                archive.write(os.path.join(model_dir, name), _RUN + name)
    os.replace(tmp, path)


def run_files_inside(path: str) -> dict[str, str]:
    """The text of each run file `save` put inside `path`, by name (none in other files)."""
    try:
        with zipfile.ZipFile(path) as archive:
            inside = set(archive.namelist())
            return {n: archive.read(_RUN + n).decode() for n in RUN_FILES if _RUN + n in inside}
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .keras model file: {error}") from None


def load_weights(model: object, path: str) -> None:
    """`model.load_weights(path)` for a `.keras` file, from an extracted copy of its weights.

    Keras's `load_weights` reads them with h5py from inside the zip, where every backward seek
    re-reads the member from its start (Python 3.11): 2.9-4.1 s for the full-size network,
    0.7-1.1 s extracted (AMX Xeon). Keras's own `load_model` extracts them the same way.
    """
    with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as directory:
        model.load_weights(archive.extract(_WEIGHTS, directory))


def layer_configs(path: str) -> LayerConfigs:
    """Each layer's class name and config, in the file's order."""
    try:
        with zipfile.ZipFile(path) as archive:
            model = json.loads(archive.read("config.json"))
        layers = model["config"]["layers"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .keras model file: {error}") from None
    return {layer["config"]["name"]: (layer["class_name"], layer["config"]) for layer in layers}


def network_function(layers: LayerConfigs) -> LayerConfigs:
    """The entries of each layer's config that decide what it computes."""
    function = {}
    for name, (class_name, config) in layers.items():
        kept = {
            key: value
            for key, value in config.items()
            if key not in _NOT_THE_FUNCTION
            and not key.endswith(("_initializer", "_regularizer", "_constraint"))
        }
        function[name] = (class_name, {**_DEFAULTS.get(class_name, {}), **kept})
    return function


def model_layer_configs(model: object) -> LayerConfigs:
    """`layer_configs` of a built functional Keras model."""
    return {
        layer["config"]["name"]: (layer["class_name"], layer["config"])
        for layer in model.get_config()["layers"]
    }


def differences(expected: LayerConfigs, actual: LayerConfigs) -> list[str]:
    """What differs between two networks' functions, one phrase per difference."""
    ours, theirs = network_function(expected), network_function(actual)
    found = [f"layer {name} is missing" for name in ours if name not in theirs]
    found += [f"an extra layer {name}" for name in theirs if name not in ours]
    for name in ours.keys() & theirs.keys():
        (class_a, a), (class_b, b) = ours[name], theirs[name]
        if class_a != class_b:
            found.append(f"{name} is a {class_b}, not a {class_a}")
            continue
        for key in sorted(a.keys() | b.keys()):
            if not _same(a.get(key), b.get(key)):
                found.append(f"{name} {key}={b.get(key)!r} instead of {a.get(key)!r}")
    return found


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def settings(path: str) -> dict:
    """The `TrainConfig` fields of the network in `path` (`build_alexnet` rebuilds it from them).

    Raises ValueError naming the file when it holds a network this project does not build (an
    LRN that is neither the paper's nor Caffe's, say).
    """
    layers = layer_configs(path)
    config = {name: value for name, (_, value) in layers.items()}
    inputs = [value for name, (kind, value) in layers.items() if kind == "InputLayer"]
    if not inputs or "conv1" not in config or "fc8" not in config:
        raise ValueError(f"{path} does not hold an AlexNet (no images input, conv1 or fc8).")
    found = dict(
        architecture="torchvision" if "avgpool" in config else "paper",
        image_size=int(inputs[0]["batch_shape"][1]),
        groups=int(config["conv1"]["groups"]),
        use_lrn="lrn1" in config,
        lrn_form="paper",
        input_scale=float(config.get("input_scale", {}).get("scale", 1.0)),
    )
    if "fc6" in config:
        found["fc_units"] = int(config["fc6"]["units"])
    drop = config.get("drop6")
    if drop is not None:
        found["dropout"] = float(drop["rate"])
        found["dropout_form"] = drop.get("form", _DEFAULTS["ColumnDropout"]["form"])
    if found["use_lrn"]:
        found["lrn_form"] = _lrn_form(path, config["lrn1"], found["groups"])
    return found


def _lrn_form(path: str, lrn: dict, groups: int) -> str:
    """ "paper" or "caffe", from lrn1's constants (Caffe's alpha is stored divided by n)."""
    values = (lrn["depth_radius"], lrn["bias"], lrn["alpha"], lrn["beta"], lrn["groups"])
    paper = (constants.LRN_DEPTH_RADIUS, constants.LRN_K, constants.LRN_ALPHA,
             constants.LRN_BETA, groups)  # fmt: skip
    caffe = (constants.CAFFE_LRN_DEPTH_RADIUS, constants.CAFFE_LRN_K,
             constants.CAFFE_LRN_ALPHA / constants.CAFFE_LRN_LOCAL_SIZE, constants.CAFFE_LRN_BETA,
             1)  # fmt: skip
    for form, expected in (("paper", paper), ("caffe", caffe)):
        if all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(values, expected)):
            return form
    raise ValueError(
        f"{path}: lrn1 is neither the paper's LRN nor Caffe's (depth_radius, k, alpha, beta, "
        f"groups = {values})."
    )
