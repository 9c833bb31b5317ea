"""A training run loaded back: its network (rebuilt from its config, with portable kernels) and
its statistics. The file names and the TensorFlow-free readers are in `run_files`.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from alexnet_keras import keras_file, kernels, run_files
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import stats as stats_lib
from alexnet_keras.model import build_alexnet


def load_stats(model_dir: str) -> stats_lib.DatasetStats:
    """The mean/PCA statistics the run trained with."""
    return stats_lib.load_stats(os.path.join(model_dir, run_files.STATS_FILE))


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
        keras_file.load_weights(model, checkpoint)
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
    config = run_files.load_config(model_dir)
    class_names = run_files.load_class_names(model_dir)
    model = load_inference_model(
        run_files.model_file(model_dir, checkpoint), config, len(class_names)
    )
    return Run(model, config, class_names, load_stats(model_dir))
