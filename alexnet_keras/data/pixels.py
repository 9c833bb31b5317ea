"""Pixel values of one image: decoding, float conversion, per-channel shifts and PCA lighting.

Conventions: images are RGB, channels-last, float32 on the 0..255 scale (uint8 inputs are cast).
A uint8 training batch travels with its per-image shifts and is finished by `shift_batch`.
Randomness: every random function takes `seed`; a shape-[2] integer tensor (or a Python int) selects
the stateless `tf.random.stateless_*` ops, so a seeded pipeline reproduces the same augmentation;
`seed=None` uses the global stateful generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# A stateless seed: shape-[2] integer tensor, a pair, or an int (-> [int, 0]); None: stateful RNG.
Seed = tf.Tensor | Sequence[int] | int | None
Matrix = Sequence[Sequence[float]] | tf.Tensor
Vector = Sequence[float] | tf.Tensor


def as_seed(seed: Seed) -> tf.Tensor | None:
    """`seed` as a shape-[2] int64 stateless seed (None stays None)."""
    if seed is None:
        return None
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(seed, tf.int64)


def split_seed(seed: Seed, num: int) -> list:
    """`num` independent stateless seeds derived from `seed` (or `num` Nones)."""
    seed = as_seed(seed)
    if seed is None:
        return [None] * num
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, num)))


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/GIF/BMP bytes (any file name) to uint8 [H, W, 3]; grayscale -> RGB."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def to_rgb_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 or float image [H, W, C] with C in {1, 3} -> float32 [H, W, 3] on the 0..255 scale."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(f"Expected one image [H, W, C]. Received shape: {image.shape}")
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return tf.cast(image, tf.float32)


def add_per_channel(image: tf.Tensor, shift: Vector) -> tf.Tensor:
    """image [..., W, C] + shift [C] (e.g. minus the mean, plus the lighting offset).

    Done as a [rows, W*C] + [W*C] add: broadcasting a [3] vector over the last axis runs ~5x slower
    on CPU (measured 229 us with `tf.nn.bias_add`, 45 us this way, for one 227x227x3 image).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    rows = tf.reshape(image, tf.stack([-1, shape[-2] * shape[-1]]))
    out = tf.reshape(rows + tf.tile(tf.cast(shift, image.dtype), shape[-2:-1]), shape)
    out.set_shape(image.shape)
    return out


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """A float image on 0..255 (e.g. resized) as uint8, rounded to the nearest level: what an
    8-bit stored image holds (the paper's 256x256 ImageNet copies were)."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def shift_batch(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """uint8 images [B, H, W, C] + per-image shifts [B, C] -> float32 [B, H, W, C].

    The device's half of `--input_dtype=uint8` (see `preprocessing.preprocess_for_train`): the
    cast and the same per-channel add as `add_per_channel`, for a batch. As a [B, H, W*C] +
    [B, 1, W*C] add: 12.7 ms at batch 128 x 227 px, 30 ms broadcasting [B, 1, 1, C] (AMX Xeon).
    """
    _, height, width, channels = images.shape
    rows = tf.reshape(tf.cast(images, tf.float32), (-1, height, width * channels))
    return tf.reshape(rows + tf.tile(shifts, [1, width])[:, None, :], tf.shape(images))


def sample_lighting_alpha(alpha_std: float = 0.1, seed: Seed = None) -> tf.Tensor:
    """The three alpha_i ~ N(0, alpha_std) that `pca_lighting` draws for the same seed."""
    seed = as_seed(seed)
    if seed is None:
        return tf.random.normal([3], stddev=alpha_std)
    return tf.random.stateless_normal([3], seed, stddev=alpha_std)


def lighting_shift(alpha: tf.Tensor, eigval: Vector, eigvec: Matrix) -> tf.Tensor:
    """The RGB offset eigvec @ (alpha * eigval) (eigvec columns are the eigenvectors)."""
    eigval = tf.constant(eigval, tf.float32)
    eigvec = tf.constant(eigvec, tf.float32)
    return tf.linalg.matvec(eigvec, tf.cast(alpha, tf.float32) * eigval)


def pca_lighting(
    image: tf.Tensor, eigval: Vector, eigvec: Matrix, alpha_std: float = 0.1, seed: Seed = None
) -> tf.Tensor:
    """Sec. 4.1 "fancy PCA": adds one random RGB offset along the principal components.

    The offset is eigvec @ (alpha * eigval) with alpha ~ N(0, alpha_std) drawn once per call, i.e.
    per image per use, to every pixel. No clipping: the paper adds the quantity to the pixels.
    """
    alpha = sample_lighting_alpha(alpha_std, seed)
    return add_per_channel(to_rgb_float(image), lighting_shift(alpha, eigval, eigvec))
