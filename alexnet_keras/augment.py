"""The paper's training input path (Sec. 2 + 4.1), fast: fused JPEG decode+crop, flip, lighting.

Built from the pure functions in `preprocessing.py` and equal to composing them (tested):

    crop, offset = random_square_crop(image, S, R)     # Sec. 2 rescale + Sec. 4.1 random crop
    x = normalize(crop, stats, offset, R)               # Sec. 2 mean subtraction
    x = random_flip(x)                                  # Sec. 4.1 reflection
    x = pca_lighting(x, stats.eigval, stats.eigvec)     # Sec. 4.1 PCA lighting

but arranged for throughput on CPU (tools/bench_input.py): JPEG bytes are decoded only inside the
crop window (`tf.io.decode_and_crop_jpeg`), the flip happens on the small uint8 window before the
resize, and the mean and lighting shift are added in one pass.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_keras import preprocessing as pp
from alexnet_keras.constants import IMAGE_SIZE
from alexnet_keras.preprocessing import IntLike, Seed
from alexnet_keras.stats import DatasetStats


def train_window(
    height: IntLike, width: IntLike, image_size: int, resize_size: int, seed: Seed = None
) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Random crop offset in the resize_size square and the matching window in the source image.

    The paper crops image_size from the resize_size x resize_size central square of the rescaled
    image. Mapped back to source pixels, that square is the central min(H, W) square and the crop is
    a square of side min(H, W) * image_size / resize_size; decoding only that window and resizing it
    to image_size gives the same crop (up to sub-pixel rounding of the window to whole source
    pixels) without decoding or resizing the rest of the image.

    Returns:
        ((y, x) offset in the resize_size square, [top, left, side, side] window in the source).
    """
    offset = pp.random_crop_offset(resize_size, resize_size, image_size, seed)
    side = tf.minimum(height, width)
    scale = tf.cast(side, tf.float32) / resize_size
    crop = tf.maximum(1, tf.cast(tf.round(image_size * scale), tf.int32))

    def to_source(value: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
        shift = tf.cast(tf.round(tf.cast(value, tf.float32) * scale), tf.int32)
        return start + tf.minimum(shift, side - crop)

    top = to_source(offset[0], (height - side) // 2)
    left = to_source(offset[1], (width - side) // 2)
    return offset, tf.stack([top, left, crop, crop])


def random_square_crop(
    image: tf.Tensor,
    image_size: int,
    resize_size: int,
    seed: Seed = None,
    flip: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
    """Sec. 2 + 4.1 on a decoded image: resize_size square, then a random image_size crop.

    Returns (crop float32 [S, S, 3], offset (y, x) of the crop inside the resize_size square),
    mirrored when `flip` is True.
    """
    square = pp.resize_shorter_and_center_crop(image, resize_size)
    offset = pp.random_crop_offset(resize_size, resize_size, image_size, seed)
    crop = tf.slice(square, tf.stack([offset[0], offset[1], 0]), [image_size, image_size, 3])
    return (crop if flip is None else pp.flip_if(crop, flip)), offset


def decode_and_random_crop(
    image_bytes: tf.Tensor,
    image_size: int,
    resize_size: int,
    seed: Seed = None,
    flip: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
    """`random_square_crop` straight from encoded bytes; JPEGs use `tf.io.decode_and_crop_jpeg`.

    Non-JPEG bytes (PNG, also PNGs named .JPEG) are fully decoded and take `random_square_crop`.
    A flip is applied to the uint8 window before the resize (bilinear resizing is mirror-symmetric,
    so this equals flipping afterwards, on fewer bytes).
    Returns (crop float32 [S, S, 3] on 0..255, offset (y, x) inside the resize_size square).
    """

    def fused():
        shape = tf.io.extract_jpeg_shape(image_bytes)
        offset, window = train_window(shape[0], shape[1], image_size, resize_size, seed)
        crop = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
        if flip is not None:
            crop = pp.flip_if(crop, flip)
        # Images stored with the shorter side at resize_size (as the paper stored ImageNet) need no
        # resize: the window is already image_size. Otherwise resizing is ~30% of the CPU cost.
        crop = tf.cond(
            tf.equal(window[2], image_size),
            lambda: tf.cast(crop, tf.float32),
            lambda: pp.resize(crop, image_size, image_size),
        )
        return crop, tf.stack(offset)

    def generic():
        image = pp.decode_image(image_bytes)
        crop, offset = random_square_crop(image, image_size, resize_size, seed, flip)
        return crop, tf.stack(offset)

    crop, offset = tf.cond(tf.io.is_jpeg(image_bytes), fused, generic)
    crop.set_shape([image_size, image_size, 3])
    return crop, (offset[0], offset[1])


def preprocess_for_train(
    image: tf.Tensor,
    stats: DatasetStats,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    augment: bool = True,
    lighting_std: float = 0.1,
    seed: Seed = None,
) -> tf.Tensor:
    """Training: random crop of the rescaled square, mean subtraction, flip, PCA lighting.

    Args:
        image: encoded bytes (scalar tf.string; JPEGs take the fused decode+crop path) or a
            decoded image [H, W, 1 or 3].
        stats: mean and PCA statistics of the training set.
        image_size, resize_size: crop size and rescale size (default: the paper's 256:227 ratio).
        augment: False gives the eval centre crop (no flip, no lighting).
        lighting_std: std of alpha in the PCA lighting; 0 disables it.
        seed: shape-[2] stateless seed (a seeded pipeline passes one per example) or None.

    Returns:
        float32 [image_size, image_size, 3], mean subtracted.
    """
    resize_size = resize_size or pp.default_resize_size(image_size)
    image = tf.convert_to_tensor(image)
    if not augment:
        if image.dtype == tf.string:
            image = pp.decode_image(image)
        return pp.preprocess_for_eval(image, stats, image_size, resize_size)
    crop_seed, flip_seed, light_seed = pp.split_seed(seed, 3)
    coin = pp.flip_coin(flip_seed)
    # With a mean image the paper subtracts it before mirroring, so flip after normalising; with a
    # per-channel mean the order does not matter and the flip is done early, on the uint8 window.
    early_flip = None if stats.mean_image is not None else coin
    if image.dtype == tf.string:
        crop, offset = decode_and_random_crop(image, image_size, resize_size, crop_seed, early_flip)
    else:
        crop, offset = random_square_crop(image, image_size, resize_size, crop_seed, early_flip)
    if stats.mean_image is not None:
        crop = pp.flip_if(pp.normalize(crop, stats, offset=offset, resize_size=resize_size), coin)
        channel_shift = tf.zeros([3])
    else:
        channel_shift = -tf.constant(stats.mean_rgb, tf.float32)
    if lighting_std:
        alpha = pp.sample_lighting_alpha(lighting_std, light_seed)
        channel_shift += pp.lighting_shift(alpha, stats.eigval, stats.eigvec)
    return pp.add_per_channel(crop, channel_shift)  # Mean and lighting in one pass.
