"""conv1's filters as a picture (the paper's Fig. 3): a lossless PNG and the columns' saturation.

The grid itself is `alexnet_keras.filter_grid` (shared with training's TensorBoard callback).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from alexnet_keras.filter_grid import RANDOM_KERNEL_SATURATION


def write_png(image: np.ndarray, path: str) -> None:
    """Writes a uint8 [h, w, 3] array as a lossless PNG (TensorFlow's encoder, no matplotlib)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def format_saturation(saturation: Sequence[float]) -> str:
    """The per-column saturations as lines a user can check the paper's claim against."""
    lines = [
        f"conv1 column {c} (GPU {c + 1}): mean colour saturation {s:.3f}"
        for c, s in enumerate(saturation)
    ]
    lines.append(
        f"(0 = colour-agnostic, 1 = purely colour-opponent, random kernels ~"
        f"{RANDOM_KERNEL_SATURATION:.2f}. Paper, Fig. 3: one column mostly colour-agnostic, "
        "the other colour-specific.)"
    )
    return "\n".join(lines)
