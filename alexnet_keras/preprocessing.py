"""The paper's image preprocessing as pure TensorFlow functions on one image.

Shared by the training and evaluation pipelines (`pipeline.py`) and the serving graph (`export.py`),
so that what the network sees at serving time is exactly what it saw in evaluation. Every function
works eagerly and inside `tf.data.Dataset.map` / `tf.function`.

Conventions: images are RGB, channels-last, float32 on the 0..255 scale (uint8 inputs are cast).
Randomness: every random function takes `seed`; a shape-[2] integer tensor (or a Python int) selects
the stateless `tf.random.stateless_*` ops, so a seeded pipeline reproduces the same augmentation;
`seed=None` uses the global stateful generator.

Paper recipe (Krizhevsky et al. 2012):
  Sec. 2:   rescale the shorter side to 256, centre-crop 256x256, subtract the mean image.
  Sec. 4.1: random 227x227 crops (the paper says 224; see model.py) and horizontal reflections;
            PCA lighting: add eigvec @ (alpha * eigval), alpha ~ N(0, 0.1), per image per use.
  Sec. 4.1: test time: the four corner and the centre crop and their reflections (10 crops).
The training path, arranged for speed from encoded JPEG bytes, is `augment.preprocess_for_train`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from alexnet_keras.constants import IMAGE_SIZE, RESIZE_SIZE
from alexnet_keras.stats import DatasetStats

# A stateless seed: shape-[2] integer tensor, a pair, or an int (-> [int, 0]); None: stateful RNG.
Seed = tf.Tensor | Sequence[int] | int | None
IntLike = int | tf.Tensor
Matrix = Sequence[Sequence[float]] | tf.Tensor
Vector = Sequence[float] | tf.Tensor

# Plain bilinear, as TF Model Garden's ImageNet preprocessing: antialias=True cut the training
# pipeline's throughput 3x on CPU (measured, tools/bench_input.py) for a 1.1-1.5x downscale where
# aliasing is mild; "area" was 12% slower than bilinear.
_RESIZE_METHOD = tf.image.ResizeMethod.BILINEAR
_ANTIALIAS = False


def default_resize_size(image_size: int) -> int:
    """The rescale size that keeps the paper's 256:227 ratio (256 for 227, 76 for 67)."""
    return int(round(image_size * RESIZE_SIZE / IMAGE_SIZE))


def _as_seed(seed: Seed) -> tf.Tensor | None:
    if seed is None:
        return None
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(seed, tf.int64)


def split_seed(seed: Seed, num: int) -> list:
    seed = _as_seed(seed)
    if seed is None:
        return [None] * num
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, num)))


def _uniform_int(maxval: IntLike, seed: Seed) -> tf.Tensor:
    """One integer uniform in [0, maxval] (inclusive)."""
    maxval = tf.cast(maxval, tf.int32) + 1
    if seed is None:
        return tf.random.uniform([], 0, maxval, tf.int32)
    return tf.random.stateless_uniform([], _as_seed(seed), 0, maxval, tf.int32)


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


def resize(image: tf.Tensor, height: IntLike, width: IntLike) -> tf.Tensor:
    """Bilinear resize to [height, width]; float32 out, 0..255 scale kept, grayscale -> RGB."""
    # Cast first: ResizeBilinear is ~2x slower reading uint8 than float32 (measured 276 vs 122 us
    # for 332->227, plus 31 us for the cast).
    image = to_rgb_float(image)
    return tf.image.resize(image, [height, width], method=_RESIZE_METHOD, antialias=_ANTIALIAS)


def resize_shorter(image: tf.Tensor, size: int) -> tf.Tensor:
    """Rescales so the shorter side is `size`, keeping the aspect ratio (Sec. 2)."""
    image = to_rgb_float(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_height = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
    new_width = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
    return resize(image, new_height, new_width)


def center_crop(image: tf.Tensor, crop_size: int) -> tf.Tensor:
    """The central crop_size x crop_size window (image must be at least that large)."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    top = (shape[0] - crop_size) // 2
    left = (shape[1] - crop_size) // 2
    crop = image[top : top + crop_size, left : left + crop_size]
    crop.set_shape([crop_size, crop_size, image.shape[-1]])
    return crop


def resize_shorter_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Sec. 2: shorter side -> `size`, then the central size x size square. float32 out."""
    return center_crop(resize_shorter(image, size), size)


def random_crop_offset(
    height: IntLike, width: IntLike, crop_size: int, seed: Seed = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-left corner (y, x) of a uniformly random crop_size window inside height x width."""
    seed_y, seed_x = split_seed(seed, 2)
    return _uniform_int(height - crop_size, seed_y), _uniform_int(width - crop_size, seed_x)


def random_crop(image: tf.Tensor, crop_size: int, seed: Seed = None) -> tf.Tensor:
    """Sec. 4.1: a uniformly random crop_size x crop_size window lying inside the image."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    top, left = random_crop_offset(shape[0], shape[1], crop_size, seed)
    crop = image[top : top + crop_size, left : left + crop_size]
    crop.set_shape([crop_size, crop_size, image.shape[-1]])
    return crop


def flip_coin(seed: Seed = None) -> tf.Tensor:
    """The boolean `random_flip` draws for the same seed (True: mirror)."""
    seed = _as_seed(seed)
    if seed is None:
        return tf.random.uniform([]) < 0.5
    return tf.random.stateless_uniform([], seed) < 0.5


def flip_if(image: tf.Tensor, coin: tf.Tensor) -> tf.Tensor:
    """Mirrors the image left-right when `coin` is True."""
    image = tf.convert_to_tensor(image)
    return tf.cond(coin, lambda: tf.reverse(image, axis=[-2]), lambda: image)


def random_flip(image: tf.Tensor, seed: Seed = None) -> tf.Tensor:
    """Sec. 4.1: horizontal reflection with probability 1/2."""
    return flip_if(image, flip_coin(seed))


def sample_lighting_alpha(alpha_std: float = 0.1, seed: Seed = None) -> tf.Tensor:
    """The three alpha_i ~ N(0, alpha_std) that `pca_lighting` draws for the same seed."""
    seed = _as_seed(seed)
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


def _mean_tensor(stats: DatasetStats, size: int | None) -> tf.Tensor:
    """Per-channel mean [3], or the mean image resized to size x size [size, size, 3]."""
    mean_image = stats.mean_image_array
    if mean_image is None or size is None:
        return tf.constant(stats.mean_rgb, tf.float32)
    return resize(tf.constant(mean_image), size, size)


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
    image = to_rgb_float(image)
    if stats.mean_image is None:
        return add_per_channel(image, -tf.constant(stats.mean_rgb, tf.float32))
    size = image.shape[0]
    if size is None or image.shape[1] != size:
        raise ValueError(f"Mean-image subtraction needs a static square image. Got {image.shape}")
    resize_size = resize_size or default_resize_size(size)
    mean = _mean_tensor(stats, resize_size)
    if offset is None:
        return image - center_crop(mean, size)
    top, left = offset
    return image - tf.slice(mean, tf.stack([top, left, 0]), [size, size, 3])


def ten_crop_offsets(size: int, crop_size: int) -> list[tuple[int, int]]:
    """(y, x) of the four corner crops and the centre crop, in the paper's 10-crop order."""
    far, mid = size - crop_size, (size - crop_size) // 2
    return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]


def ten_crops(image: tf.Tensor, crop_size: int) -> tf.Tensor:
    """Sec. 4.1 test time: 4 corners + centre, then their horizontal mirrors -> [10, c, c, 3].

    The image must be square (the paper's 256x256); corners are taken from its edges.
    """
    image = tf.convert_to_tensor(image)
    size = image.shape[0] if image.shape[0] is not None else tf.shape(image)[0]
    crops = []
    for top, left in ten_crop_offsets(size, crop_size):
        crop = image[top : top + crop_size, left : left + crop_size]
        crop.set_shape([crop_size, crop_size, image.shape[-1]])
        crops.append(crop)
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


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
    resize_size = resize_size or default_resize_size(image_size)
    square = resize_shorter_and_center_crop(image, resize_size)
    square = normalize(square, stats, offset=(0, 0), resize_size=resize_size)
    if ten_crop:
        return ten_crops(square, image_size)
    return center_crop(square, image_size)
