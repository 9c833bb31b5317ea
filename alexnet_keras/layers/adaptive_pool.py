"""Adaptive average pooling to a fixed output size, as torch's `AdaptiveAvgPool2d`."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling whose windows adapt to the input so the output is `output_size`.

    torch's `AdaptiveAvgPool2d` semantics (aten/src/ATen/native/AdaptiveAveragePooling.cpp): for
    an input of H rows and h output rows, output row i averages rows [floor(i * H / h),
    ceil((i + 1) * H / h)), and the same for columns; windows overlap when h does not divide H,
    and repeat rows when H < h. torchvision's alexnet() pools pool5 to 6x6 with it, so its
    classifier takes 9216 inputs at any image size; at 224 input pool5 is already 6x6 and the
    layer is the identity. Each output averages a rectangle, i.e. a row average of column
    averages, so it is computed as two small averaging matrices applied to the rows and columns.

    Args:
        output_size: int or pair (height, width).

    Input shape: `(batch, height, width, channels)`.
    Output shape: `(batch, output_height, output_width, channels)`.

    Example:
        >>> AdaptiveAveragePooling2D(6)(keras.ops.zeros((1, 13, 13, 256))).shape
        (1, 6, 6, 256)
    """

    def __init__(self, output_size: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.output_size = columns.pair(output_size, "output_size")

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 4 or None in input_shape[1:3]:
            raise ValueError(
                "AdaptiveAveragePooling2D expects (batch, height, width, channels) inputs of known "
                f"size. Received: input_shape={input_shape}"
            )
        self.built = True

    def call(self, inputs: object) -> object:
        height, width = inputs.shape[1:3]
        if (height, width) == self.output_size:
            return inputs  # Every window is one pixel.
        rows = ops.cast(_averaging_matrix(height, self.output_size[0]), inputs.dtype)
        cols = ops.cast(_averaging_matrix(width, self.output_size[1]), inputs.dtype)
        return ops.einsum("ih,bhwc,jw->bijc", rows, inputs, cols)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(output_size=self.output_size)
        return config


def _averaging_matrix(length: int, size: int) -> np.ndarray:
    """[size, length]: row i is 1/n on the n inputs of window i, [floor(i * length / size),
    ceil((i + 1) * length / size))."""
    matrix = np.zeros((size, length), np.float32)
    for i in range(size):
        start, end = i * length // size, -(-(i + 1) * length // size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix
