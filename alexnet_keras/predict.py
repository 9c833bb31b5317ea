"""Top-5 classes of image files from an exported SavedModel, in-process (no server needed).

    python -m alexnet_keras.predict cat.jpg dog.png --saved_model=exports/alexnet
    python -m alexnet_keras.predict cat.jpg --saved_model=exports/alexnet/3

--saved_model is a version directory or a model directory (its highest version is used). The
images go through the export's `serving_default` signature, the same graph TF Serving runs.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from alexnet_keras.serving_client import Prediction, format_predictions  # noqa: E402

DEFAULT_SAVED_MODEL = os.path.join("exports", "alexnet")  # export.DEFAULT_EXPORT_BASE / name.


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


def main(argv: list[str]) -> None:
    from absl import app, flags

    if len(argv) < 2:
        raise app.UsageError("Pass one or more image files: predict IMAGE... --saved_model=DIR")
    paths = argv[1:]
    try:
        predictions = predict_files(flags.FLAGS.saved_model, paths, flags.FLAGS.batch_size)
    except (FileNotFoundError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
    print(format_predictions(paths, predictions))


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string(
        "saved_model",
        DEFAULT_SAVED_MODEL,
        "An export's version directory, or a model directory (latest version).",
    )
    flags.DEFINE_integer("batch_size", 32, "Images per signature call.", lower_bound=1)


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
