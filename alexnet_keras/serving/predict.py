"""Top-k classes of image files from an exported SavedModel, in-process (no server needed).

The files' bytes go through the export's `serving_default` signature, the same graph TF Serving
runs. The command line is `python -m alexnet_keras.predict` (`alexnet_keras.cli.predict`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from alexnet_keras.serving.client import Prediction


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


class RejectedImages(ValueError):
    """Files the signature refused, each named with its reason; `predictions` holds the other
    files' results in order (None for a refused file), so a caller can still report them."""

    def __init__(self, reasons: Sequence[str], predictions: Sequence[Prediction | None]):
        super().__init__("; ".join(reasons))
        self.predictions = list(predictions)


def _explain(message: str, path: str) -> str:
    """Why the signature refused one file: its assertion's message, or else the failing op's."""
    detail = re.search(r"assertion failed: \[(.*?)\]\n", message)
    if detail:
        return f"{path}: {detail.group(1)}"
    reason = re.search(r"\n([^\n]+)\n\t \[\[", message)  # The line before "[[{{node ...}}]]".
    return f"{path}: not a readable image ({reason.group(1) if reason else message})"


def predict_files(
    saved_model_dir: str, paths: Sequence[str], batch_size: int = 32
) -> list[Prediction]:
    """Runs the files' bytes through `serving_default` in batches; returns their top-k.

    A batch the signature refuses runs again one file at a time, so that each bad file is named
    (a damaged JPEG fails inside the decoder, which cannot say which one) and costs no other file
    its result; then `RejectedImages` names every bad file and carries the others' results.
    """
    import tensorflow as tf

    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file {path} does not exist.")
    signature = tf.saved_model.load(resolve_saved_model(saved_model_dir)).signatures[
        "serving_default"
    ]

    def run(batch_paths: Sequence[str]) -> list[Prediction]:
        batch = []
        for path in batch_paths:
            with open(path, "rb") as f:
                batch.append(f.read())
        outputs = signature(image_bytes=tf.constant(batch))
        outputs = {name: value.numpy() for name, value in outputs.items()}
        return [
            Prediction(
                tuple(v.decode("utf-8") for v in outputs["top_k_labels"][i]),
                tuple(float(v) for v in outputs["top_k_scores"][i]),
                tuple(int(v) for v in outputs["top_k_ids"][i]),
            )
            for i in range(len(batch))
        ]

    predictions, reasons = [], []
    for start in range(0, len(paths), batch_size):
        batch_paths = paths[start : start + batch_size]
        try:
            predictions.extend(run(batch_paths))
        except tf.errors.InvalidArgumentError:
            for path in batch_paths:
                try:
                    predictions.extend(run([path]))
                except tf.errors.InvalidArgumentError as error:
                    predictions.append(None)
                    reasons.append(_explain(error.message, path))
    if reasons:
        raise RejectedImages(reasons, predictions)
    return predictions
