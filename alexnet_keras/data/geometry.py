"""Where the network's pixels come from: rescaling, crops and mirrors, for training and evaluation.

Paper recipe (Krizhevsky et al. 2012):
  Sec. 2:   rescale the shorter side to 256 and take the central 256x256 square.
  Sec. 4.1: training sees random 227x227 crops of that square (the paper says 224; see model.py)
            and their horizontal reflections.
  Sec. 4.1: test time takes the four corner and the centre crops and their reflections (10 crops).

The training path below is arranged for throughput on CPU (tools/bench_input.py): JPEG bytes are
decoded only inside the crop window (`tf.io.decode_and_crop_jpeg`) and the flip happens on the
small uint8 window before the resize. It equals the plain composition (rescale, square, random
crop, flip; tested). The evaluation geometry follows it.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_keras.constants import IMAGE_SIZE, RESIZE_SIZE
from alexnet_keras.data import pixels
from alexnet_keras.data.pixels import Seed

IntLike = int | tf.Tensor

# Plain bilinear, as TF Model Garden's ImageNet preprocessing: antialias=True cut the training
# pipeline's throughput 3x on CPU (measured, tools/bench_input.py) for a 1.1-1.5x downscale where
# aliasing is mild; "area" was 12% slower than bilinear.
_RESIZE_METHOD = tf.image.ResizeMethod.BILINEAR
_ANTIALIAS = False


def default_resize_size(image_size: int) -> int:
    """The rescale size that keeps the paper's 256:227 ratio (256 for 227, 76 for 67)."""
    return int(round(image_size * RESIZE_SIZE / IMAGE_SIZE))


def resize(image: tf.Tensor, height: IntLike, width: IntLike) -> tf.Tensor:
    """Bilinear resize to [height, width]; float32 out, 0..255 scale kept, grayscale -> RGB."""
    # Cast first: ResizeBilinear is ~2x slower reading uint8 than float32 (measured 276 vs 122 us
    # for 332->227, plus 31 us for the cast).
    image = pixels.to_rgb_float(image)
    return tf.image.resize(image, [height, width], method=_RESIZE_METHOD, antialias=_ANTIALIAS)


def resize_shorter(image: tf.Tensor, size: int) -> tf.Tensor:
    """Rescales so the shorter side is `size`, keeping the aspect ratio (Sec. 2)."""
    image = pixels.to_rgb_float(image)
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


# --- Training: a random crop of the square, maybe mirrored (Sec. 4.1)
def _uniform_int(maxval: IntLike, seed: Seed) -> tf.Tensor:
    """One integer uniform in [0, maxval] (inclusive)."""
    maxval = tf.cast(maxval, tf.int32) + 1
    if seed is None:
        return tf.random.uniform([], 0, maxval, tf.int32)
    return tf.random.stateless_uniform([], pixels.as_seed(seed), 0, maxval, tf.int32)


def random_crop_offset(
    height: IntLike, width: IntLike, crop_size: int, seed: Seed = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-left corner (y, x) of a uniformly random crop_size window inside height x width."""
    seed_y, seed_x = pixels.split_seed(seed, 2)
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
    seed = pixels.as_seed(seed)
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
    offset = random_crop_offset(resize_size, resize_size, image_size, seed)
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
    square = resize_shorter_and_center_crop(image, resize_size)
    offset = random_crop_offset(resize_size, resize_size, image_size, seed)
    crop = tf.slice(square, tf.stack([offset[0], offset[1], 0]), [image_size, image_size, 3])
    return (crop if flip is None else flip_if(crop, flip)), offset


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
            crop = flip_if(crop, flip)
        # Images stored with the shorter side at resize_size (as the paper stored ImageNet) need no
        # resize: the window is already image_size. Otherwise resizing is ~30% of the CPU cost.
        crop = tf.cond(
            tf.equal(window[2], image_size),
            lambda: tf.cast(crop, tf.float32),
            lambda: resize(crop, image_size, image_size),
        )
        return crop, tf.stack(offset)

    def generic():
        image = pixels.decode_image(image_bytes)
        crop, offset = random_square_crop(image, image_size, resize_size, seed, flip)
        return crop, tf.stack(offset)

    crop, offset = tf.cond(tf.io.is_jpeg(image_bytes), fused, generic)
    crop.set_shape([image_size, image_size, 3])
    return crop, (offset[0], offset[1])


# --- Evaluation: the centre crop, or the paper's 10 crops (Sec. 4.1)
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
