"""Top-k classes of image files from an exported SavedModel, in-process (no server needed).

The files' bytes go through the export's `serving_default` signature, the same graph TF Serving
runs. The command line is `python -m alexnet_keras.predict` (`alexnet_keras.cli.predict`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from alexnet_keras.serving.client import Prediction
from alexnet_keras.serving.export import DEFAULT_EXPORT_BASE, DEFAULT_MODEL_NAME

DEFAULT_SAVED_MODEL = os.path.join(DEFAULT_EXPORT_BASE, DEFAULT_MODEL_NAME)


def resolve_saved_model(path: str) -> str:
    """`path` itself if it holds saved_model.pb, else its highest numeric version subdirectory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(
        (int(name) for name in os.listdir(path) if name.isdigit()) if os.path.isdir(path) else []
    )
    if not versions:
        raise FileNotFoundError(
            f"No SavedModel in --saved_model={path}: expected saved_model.pb or numeric version "
            "directories. Export one with `python tools/export.py`."
        )
    return os.path.join(path, str(versions[-1]))


def _explain(message: str, paths: Sequence[str]) -> str:
    """The graph's assertion message, with the offending file named."""
    index = re.search(r"image_bytes\[(\d+)\]", message)
    culprit = paths[int(index.group(1))] if index else ", ".join(paths)
    detail = re.search(r"assertion failed: \[(.*?)\]\n", message)
    return f"{culprit}: {detail.group(1) if detail else message}"


def predict_files(
    saved_model_dir: str, paths: Sequence[str], batch_size: int = 32
) -> list[Prediction]:
    """Runs the files' bytes through `serving_default` in batches; returns their top-k."""
    import tensorflow as tf

    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file {path} does not exist.")
    signature = tf.saved_model.load(resolve_saved_model(saved_model_dir)).signatures[
        "serving_default"
    ]
    predictions = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start : start + batch_size]:
            with open(path, "rb") as f:
                batch.append(f.read())
        try:
            outputs = signature(image_bytes=tf.constant(batch))
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(_explain(error.message, paths[start : start + batch_size])) from error
        outputs = {name: value.numpy() for name, value in outputs.items()}
        for i in range(len(batch)):
            predictions.append(
                Prediction(
                    tuple(v.decode("utf-8") for v in outputs["top_k_labels"][i]),
                    tuple(float(v) for v in outputs["top_k_scores"][i]),
                    tuple(int(v) for v in outputs["top_k_ids"][i]),
                )
            )
    return predictions
