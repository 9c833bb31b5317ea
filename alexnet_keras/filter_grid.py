"""conv1's kernels tiled as the paper's Fig. 3, one panel per column, and their colour saturation.

Pure NumPy (plus reading the kernels off a Keras model), so it is tested pixel for pixel and shared
by training's TensorBoard callback and the pictures tool without either importing the other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
import numpy as np

# sqrt(2/3): two of a pixel's three colour directions are chromatic, so an isotropic random
# kernel (e.g. at initialisation) has this saturation on average.
RANDOM_KERNEL_SATURATION = math.sqrt(2.0 / 3.0)


def conv1_kernels(model: keras.Model, layer_name: str = "conv1") -> list[np.ndarray]:
    """conv1's kernels per network column, each [height, width, 3, filters] (Keras HWIO layout).

    A two-column net (`GroupedConv2D`, groups=2) gives two arrays of (11, 11, 3, 48): column 0 and
    column 1, the paper's GPU 1 and GPU 2. A one-column net gives one (11, 11, 3, 96).
    """
    layer = model.get_layer(layer_name)
    kernels = getattr(layer, "kernels", None) or [layer.kernel]
    return [np.asarray(keras.ops.convert_to_numpy(k), np.float32) for k in kernels]


def normalize_for_display(kernels: np.ndarray) -> np.ndarray:
    """Each kernel [n, h, w, 3] min-max scaled on its own to [0, 1] (all three channels jointly,
    so its colours are kept); a constant kernel becomes mid-grey. As cuda-convnet drew Fig. 3."""
    kernels = np.asarray(kernels, np.float64)
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    span = kernels.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = np.divide(kernels - low, span, out=np.full_like(kernels, 0.5), where=span > 0)
    return scaled.astype(np.float32)


def kernel_saturation(kernels: np.ndarray) -> np.ndarray:
    """Colour saturation of each raw kernel [n, h, w, 3] -> [n], in [0, 1].

    Definition: split each kernel W into its grey part (at every pixel, the mean of the R, G and B
    weights, repeated on all three) and its colour part (the rest, W minus the grey part); the
    saturation is the colour part's share of the kernel's magnitude, ||W - grey(W)|| / ||W||
    (Frobenius norms over pixels and channels). It is 0 for a colour-agnostic kernel (equal weight
    on R, G and B at every pixel: it sees only brightness), 1 for a purely colour-opponent one
    (e.g. red minus green, blind to brightness), and about sqrt(2/3) = 0.82 for random kernels.
    It is measured on the raw weights, so it does not depend on the display normalisation.
    """
    kernels = np.asarray(kernels, np.float64)
    grey = kernels.mean(axis=-1, keepdims=True)
    colour = np.sqrt(((kernels - grey) ** 2).sum(axis=(1, 2, 3)))
    total = np.sqrt((kernels**2).sum(axis=(1, 2, 3)))
    return np.divide(colour, total, out=np.zeros_like(total), where=total > 0)


@dataclasses.dataclass(frozen=True)
class FilterGrid:
    """conv1's kernels tiled as the paper's Fig. 3: one panel per network column, stacked.

    Attributes:
        image: uint8 [height, width, 3], white background, each kernel upscaled `scale` times.
        cells: float32 [columns, kernels_per_column, kh, kw, 3], each normalised to [0, 1].
        saturation: mean `kernel_saturation` of each column's kernels.
        boxes: per column, the (top, left) pixel of each kernel's cell in `image`.
        cell_size: a cell's side in pixels (kernel side x scale).
    """

    image: np.ndarray
    cells: np.ndarray
    saturation: tuple[float, ...]
    boxes: tuple[tuple[tuple[int, int], ...], ...]
    cell_size: int


def filter_grid(
    kernel_columns: Sequence[np.ndarray],
    cells_per_row: int = 16,
    scale: int = 4,
    border: int = 2,
    gap: int = 10,
) -> FilterGrid:
    """Tiles kernels [kh, kw, 3, n] per column: as Fig. 3, column 0 on top, column 1 below.

    With AlexNet's 2 x 48 kernels and the defaults each column is 3 rows of 16 cells.
    """
    if not kernel_columns or any(np.ndim(k) != 4 or np.shape(k)[2] != 3 for k in kernel_columns):
        shapes = [np.shape(k) for k in kernel_columns]
        raise ValueError(f"Expected kernels [kh, kw, 3, n] per column. Received: {shapes}")
    if cells_per_row < 1 or scale < 1 or border < 0 or gap < 0:
        raise ValueError(
            "cells_per_row and scale must be >= 1, border and gap >= 0. Received: "
            f"cells_per_row={cells_per_row}, scale={scale}, border={border}, gap={gap}"
        )
    cells = np.stack([normalize_for_display(np.transpose(k, (3, 0, 1, 2))) for k in kernel_columns])
    saturation = tuple(
        float(kernel_saturation(np.transpose(k, (3, 0, 1, 2))).mean()) for k in kernel_columns
    )
    num_columns, per_column, kh, kw, _ = cells.shape
    if kh != kw:
        raise ValueError(f"Expected square kernels. Received: {kh}x{kw}")
    size = kh * scale
    pitch = size + border
    columns_in_row = min(cells_per_row, per_column)
    rows = math.ceil(per_column / cells_per_row)
    panel_height = rows * pitch + border
    height = num_columns * panel_height + (num_columns - 1) * gap
    image = np.full((height, columns_in_row * pitch + border, 3), 255, np.uint8)
    boxes = []
    for c in range(num_columns):
        column_boxes = []
        for i in range(per_column):
            row, col = divmod(i, cells_per_row)
            top = c * (panel_height + gap) + border + row * pitch
            left = border + col * pitch
            big = np.repeat(np.repeat(cells[c, i], scale, axis=0), scale, axis=1)
            image[top : top + size, left : left + size] = np.round(big * 255).astype(np.uint8)
            column_boxes.append((top, left))
        boxes.append(tuple(column_boxes))
    return FilterGrid(image, cells, saturation, tuple(boxes), size)


def model_filter_grid(model: keras.Model, scale: int = 4) -> FilterGrid:
    """`filter_grid` of a model's conv1 (one panel per column)."""
    return filter_grid(conv1_kernels(model), scale=scale)
