"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
Algorithms for Convolutional Neural Networks", CVPR 2016): conv3, conv4 and conv5 in float32 where
the policy says so (CPUs whose convolution kernels are oneDNN's AVX2 ones).

Each 2x2 block of outputs is computed from its 4x4 input tile with 16 multiply-adds per channel
pair instead of 36: the tiles and the kernel are transformed (additions only, and halves for the
kernel), multiplied as 16 matrices [tiles, channels] @ [channels, filters], and transformed back.
The same sums as the direct convolution in another order (float32 round-off, ~1e-6 relative).
TF differentiates the three linear steps, so the input and kernel gradients are Winograd products
too.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Y = A^T [(G g G^T) * (B^T d B)] A for a 4x4 input tile d and a 3x3 kernel g (Lavin and Gray,
# Sec. 4.1). Only B^T and A^T are applied by hand below (their entries are 0 and +-1); the
# kernel's G has halves.
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def _input_rows(d: list[tf.Tensor]) -> list[tf.Tensor]:
    """B^T d for the four rows (or columns) of a tile."""
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _output_rows(m: list[tf.Tensor]) -> list[tf.Tensor]:
    """A^T m: the four transformed rows (or columns) back to two outputs."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


# The smallest maps Winograd runs on: the paper's conv3-conv5 (13x13 at 227 px), where it
# measured 1.11x on a Zen 2 EPYC. On the 3x3 maps of 67 px inputs (the demo) it measured 0.991,
# and its XLA compiles added 4-6 s to each small training process (BUILD_NOTES, "Kernels").
MIN_SIZE = 13


def applies(x: tf.Tensor, kernel: tf.Tensor) -> bool:
    """Whether `conv3x3` runs this convolution: a 3x3 kernel on a float32 input of static shape
    (XLA compiles per shape; a serving signature's batch is not static) whose maps are at least
    MIN_SIZE. bfloat16 stays direct: its tiles would round each transform's sums."""
    return (
        kernel.shape[:2] == (3, 3)
        and x.shape.is_fully_defined()
        and x.dtype == tf.float32
        and min(x.shape[1], x.shape[2]) >= MIN_SIZE
    )


def conv3x3(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(x, kernel, 1, "SAME")` for a 3x3 kernel, by F(2x2, 3x3).

    A kernel that reads channels/groups input channels makes a grouped convolution, as TF's.

    Input `(batch, height, width, channels)` (static shape), kernel `(3, 3, channels / groups,
    filters)`; output `(batch, height, width, filters)`.
    """
    batch, height, width, channels = x.shape
    groups = channels // kernel.shape[2]
    products = tf.matmul(_transform_input(x, groups), _transform_kernel(kernel, groups))
    return _transform_output(products, batch, height, width, groups)


@tf.function(jit_compile=True, autograph=False)
def _transform_input(x: tf.Tensor, groups: int) -> tf.Tensor:
    """B^T d B of every 4x4 tile (stride 2) of the zero-padded input, one XLA loop.

    [batch, h, w, channels] -> [16 * groups, tiles, channels / groups]: one matrix per tile
    position and group, tiles = batch * ceil(h / 2) * ceil(w / 2).
    """
    batch, height, width, channels = x.shape
    rows, cols = -(-height // 2), -(-width // 2)  # Tiles per column and per row.
    # "same" pads one on each side; the last tile may reach one further (odd sizes).
    x = tf.pad(x, [[0, 0], [1, 2 * rows + 1 - height], [1, 2 * cols + 1 - width], [0, 0]])
    tiles = []
    for u in _input_rows([x[:, r : r + 2 * rows - 1 : 2] for r in range(4)]):
        tiles += _input_rows([u[:, :, c : c + 2 * cols - 1 : 2] for c in range(4)])
    v = tf.reshape(tf.stack(tiles), (16, batch * rows * cols, groups, channels // groups))
    return tf.reshape(tf.transpose(v, (0, 2, 1, 3)), (16 * groups, -1, channels // groups))


@tf.function(jit_compile=True, autograph=False)
def _transform_kernel(kernel: tf.Tensor, groups: int) -> tf.Tensor:
    """G g G^T: [3, 3, channels / groups, filters] -> [16 * groups, channels / groups,
    filters / groups], matching `_transform_input`'s matrices."""
    per_group, filters = kernel.shape[2], kernel.shape[3]
    u = tf.einsum("ai,ijcf,bj->abcf", _G, kernel, _G)
    u = tf.reshape(u, (16, per_group, groups, filters // groups))
    return tf.reshape(tf.transpose(u, (0, 2, 1, 3)), (16 * groups, per_group, filters // groups))


@tf.function(jit_compile=True, autograph=False)
def _transform_output(
    products: tf.Tensor, batch: int, height: int, width: int, groups: int
) -> tf.Tensor:
    """A^T m A of every tile's 16 products, laid out as the convolution's output, one XLA loop.

    [16 * groups, tiles, filters / groups] -> [batch, height, width, filters].
    """
    rows, cols = -(-height // 2), -(-width // 2)
    per_group = products.shape[-1]
    m = tf.reshape(products, (4, 4, groups, batch, rows, cols, per_group))
    y = tf.stack(
        [tf.stack(_output_rows([u[c] for c in range(4)])) for u in _output_rows(tf.unstack(m))]
    )  # [2 (row in block), 2 (column in block), groups, batch, rows, cols, per_group]
    y = tf.transpose(y, (3, 4, 0, 5, 1, 2, 6))
    return tf.reshape(y, (batch, 2 * rows, 2 * cols, groups * per_group))[:, :height, :width]
