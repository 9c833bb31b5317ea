"""`--dataset=folder:PATH`: the name's prefix and its root directory, checked without TensorFlow,
so the training command refuses a mistyped path before TensorFlow loads."""

from __future__ import annotations

import os

FOLDER_PREFIX = "folder:"


def image_folder(dataset: str) -> str | None:
    """The root directory of a `folder:PATH` dataset name, which must exist; None for others."""
    if not dataset.startswith(FOLDER_PREFIX):
        return None
    root = os.path.expanduser(dataset[len(FOLDER_PREFIX) :])
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Image folder {root!r} (from --dataset={dataset}) does not exist. Expected "
            "<root>/<split>/<class_name>/<image>.jpg|png, e.g. <root>/train/cat/1.jpg."
        )
    return root
