"""Top-5 classes of image files from an exported SavedModel, in-process (no server needed).

    python -m alexnet_keras.predict cat.jpg dog.png --saved_model=exports/alexnet
    python -m alexnet_keras.predict cat.jpg --saved_model=exports/alexnet/3

Also the console script `alexnet-predict`. --saved_model is a version directory or a model
directory (its highest version is used). The images go through the export's `serving_default`
signature, the same graph TF Serving runs.
"""

from __future__ import annotations

from absl import app, flags

from alexnet_keras.cli import common


def define_flags() -> None:
    from alexnet_keras.config import DEFAULT_SAVED_MODEL

    flags.DEFINE_string(
        "saved_model",
        DEFAULT_SAVED_MODEL,
        "An export's version directory, or a model directory (latest version).",
    )
    flags.DEFINE_integer("batch_size", 32, "Images per signature call.", lower_bound=1)


def _main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise app.UsageError("Pass one or more image files: predict IMAGE... --saved_model=DIR")
    from alexnet_keras.serving.client import format_predictions
    from alexnet_keras.serving.predict import RejectedImages, predict_files

    paths = argv[1:]
    try:
        predictions = predict_files(flags.FLAGS.saved_model, paths, flags.FLAGS.batch_size)
    except RejectedImages as error:  # The good files' results first, then the error.
        done = [(path, p) for path, p in zip(paths, error.predictions) if p is not None]
        if done:
            print(format_predictions(*zip(*done)))
        raise
    print(format_predictions(paths, predictions))


def main() -> None:
    """`python -m alexnet_keras.predict` and the console script `alexnet-predict`."""
    common.run(define_flags, _main)


if __name__ == "__main__":
    main()
