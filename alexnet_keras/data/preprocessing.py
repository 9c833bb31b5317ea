"""The paper's preprocessing of one example, for training and for evaluation/serving.

The one definition shared by the training and evaluation pipelines (`pipeline.py`) and the serving
graph (`alexnet_keras.serving`), so what the network sees at serving time is exactly what it saw in
evaluation. Every function works eagerly and inside `tf.data.Dataset.map` / `tf.function`.

    training:   decode+random crop+flip (geometry) -> minus the mean -> PCA lighting (Sec. 2, 4.1)
                (or the uint8 crop and its mean + lighting shift, added on the device)
    evaluation: decode -> shorter side to 256 -> centre square -> minus mean -> centre or 10 crops

Images are RGB, channels-last, float32 on the 0..255 scale; see `pixels.py` for seeds.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_keras.constants import IMAGE_SIZE
from alexnet_keras.data import geometry, pixels
from alexnet_keras.data.geometry import IntLike
from alexnet_keras.data.pixels import Seed
from alexnet_keras.data.stats import DatasetStats


def _mean_tensor(stats: DatasetStats, size: int | None) -> tf.Tensor:
    """Per-channel mean [3], or the mean image resized to size x size [size, size, 3]."""
    mean_image = stats.mean_image_array
    if mean_image is None or size is None:
        return tf.constant(stats.mean_rgb, tf.float32)
    return geometry.resize(tf.constant(mean_image), size, size)


def normalize(
    image: tf.Tensor,
    stats: DatasetStats,
    offset: tuple[IntLike, IntLike] | None = None,
    resize_size: int | None = None,
) -> tf.Tensor:
    """Sec. 2: subtracts the mean (no division by a standard deviation).

    With a mean image in `stats`, it is resized to resize_size x resize_size (the paper's 256x256
    geometry; default derived from the crop size) and the window matching the image is subtracted:
    the window at `offset` (y, x) for a crop, the centre window otherwise. Without one, the
    per-channel mean is subtracted.
    """
    image = pixels.to_rgb_float(image)
    if stats.mean_image is None:
        return pixels.add_per_channel(image, -tf.constant(stats.mean_rgb, tf.float32))
    size = image.shape[0]
    if size is None or image.shape[1] != size:
        raise ValueError(f"Mean-image subtraction needs a static square image. Got {image.shape}")
    resize_size = resize_size or geometry.default_resize_size(size)
    mean = _mean_tensor(stats, resize_size)
    if offset is None:
        return image - geometry.center_crop(mean, size)
    top, left = offset
    return image - tf.slice(mean, tf.stack([top, left, 0]), [size, size, 3])


def preprocess_for_train(
    image: tf.Tensor,
    stats: DatasetStats,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    augment: bool = True,
    lighting_std: float = 0.1,
    seed: Seed = None,
    uint8_pixels: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """Training: random crop of the rescaled square, mean subtraction, flip, PCA lighting.

    Args:
        image: encoded bytes (scalar tf.string; JPEGs take the fused decode+crop path) or a
            decoded image [H, W, 1 or 3].
        stats: mean and PCA statistics of the training set.
        image_size, resize_size: crop size and rescale size (default: the paper's 256:227 ratio).
        augment: False gives the eval centre crop (no flip, no lighting).
        lighting_std: std of alpha in the PCA lighting; 0 disables it.
        seed: shape-[2] stateless seed (a seeded pipeline passes one per example) or None.
        uint8_pixels: return the crop rounded to uint8 and its RGB shift (minus the mean, plus
            the lighting offset) apart, for the step to add on the device
            (`pixels.shift_batch`): a quarter of the bytes to the device. Needs a per-channel
            mean (a mean image is a per-pixel shift).

    Returns:
        float32 [image_size, image_size, 3], mean subtracted; with `uint8_pixels`, (uint8
        [image_size, image_size, 3], float32 [3]).
    """
    resize_size = resize_size or geometry.default_resize_size(image_size)
    image = tf.convert_to_tensor(image)
    if uint8_pixels and stats.mean_image is not None:
        raise ValueError(
            "uint8_pixels needs a per-channel mean; these statistics have a mean image (a "
            "per-pixel shift, which only the host pipeline applies)."
        )
    if not augment:
        if image.dtype == tf.string:
            image = pixels.decode_image(image)
        if uint8_pixels:
            square = geometry.resize_shorter_and_center_crop(image, resize_size)
            crop = geometry.center_crop(pixels.to_rgb_float(square), image_size)
            return pixels.to_uint8(crop), -tf.constant(stats.mean_rgb, tf.float32)
        return preprocess_for_eval(image, stats, image_size, resize_size)
    crop_seed, flip_seed, light_seed = pixels.split_seed(seed, 3)
    coin = geometry.flip_coin(flip_seed)
    # With a mean image the paper subtracts it before mirroring, so flip after normalising; with a
    # per-channel mean the order does not matter and the flip is done early, on the uint8 window.
    early_flip = None if stats.mean_image is not None else coin
    if image.dtype == tf.string:
        crop, offset = geometry.decode_and_random_crop(
            image, image_size, resize_size, crop_seed, early_flip
        )
    else:
        crop, offset = geometry.random_square_crop(
            image, image_size, resize_size, crop_seed, early_flip
        )
    if stats.mean_image is not None:
        crop = geometry.flip_if(
            normalize(crop, stats, offset=offset, resize_size=resize_size), coin
        )
        channel_shift = tf.zeros([3])
    else:
        channel_shift = -tf.constant(stats.mean_rgb, tf.float32)
    if lighting_std:
        alpha = pixels.sample_lighting_alpha(lighting_std, light_seed)
        channel_shift += pixels.lighting_shift(alpha, stats.eigval, stats.eigvec)
    if uint8_pixels:
        return pixels.to_uint8(crop), channel_shift
    return pixels.add_per_channel(crop, channel_shift)  # Mean and lighting in one pass.


def preprocess_for_eval(
    image: tf.Tensor,
    stats: DatasetStats,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    ten_crop: bool = False,
) -> tf.Tensor:
    """Evaluation/serving: shorter side -> resize_size, centre square, mean, centre (or 10) crops.

    Args:
        image: decoded image [H, W, 1 or 3], uint8 or float on the 0..255 scale.
        stats: the training set's statistics (mean).
        image_size: network input size (227 in the paper).
        resize_size: rescale size; default keeps the paper's 256:227 ratio.
        ten_crop: return the paper's 10 crops [10, S, S, 3] instead of the centre crop.

    Returns:
        float32 [image_size, image_size, 3] (or [10, ...]), mean subtracted.
    """
    resize_size = resize_size or geometry.default_resize_size(image_size)
    square = geometry.resize_shorter_and_center_crop(image, resize_size)
    square = normalize(square, stats, offset=(0, 0), resize_size=resize_size)
    if ten_crop:
        return geometry.ten_crops(square, image_size)
    return geometry.center_crop(square, image_size)
