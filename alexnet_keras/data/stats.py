"""Dataset statistics for normalisation and PCA lighting: mean (per channel or image) and RGB PCA.

The paper (Sec. 2) subtracts "the mean activity over the training set from each pixel" and
(Sec. 4.1) perturbs colour along the principal components of the RGB pixel values. Both need
numbers computed from the training split. `tools/compute_stats.py` computes them for any dataset
and writes the small JSON file defined here; training writes the stats it used to
`<model_dir>/stats.json`, and export bakes them into the serving graph. ImageNet's published values
are the built-in default (`IMAGENET`).

All values are on the 0..255 pixel scale used throughout the package.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from alexnet_keras.constants import IMAGE_SIZE
from alexnet_keras.data import geometry, pixels, sources

FORMAT = "alexnet_keras.stats/v1"

# Per-channel ImageNet mean, the widely published RGB values (0.485, 0.456, 0.406) on the 0..1 scale
# (torchvision / fb.resnet.torch), times 255.
_IMAGENET_MEAN_01 = (0.485, 0.456, 0.406)
# PCA of ImageNet RGB pixels on the 0..1 scale, from fb.resnet.torch (datasets/imagenet.lua,
# `pca.eigval` / `pca.eigvec`; eigenvectors are the COLUMNS). AlexNet's own values were never
# published; these are the ones every reproduction uses. The lighting shift
# eigvec @ (alpha * eigval) is linear in eigval, so multiplying by 255 gives the same relative
# perturbation on the 0..255 scale (MXNet/GluonCV ship the same 55.46, 4.794, 1.148).
_IMAGENET_EIGVAL_01 = (0.2175, 0.0188, 0.0045)
_IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """Normalisation and colour-PCA statistics of a training split, on the 0..255 scale.

    Attributes:
        mean_rgb: per-channel mean (R, G, B).
        eigval: the three eigenvalues of the RGB covariance, in the convention of the ImageNet
            default (eigenvalues of the covariance of 0..1 pixels, times 255), largest first.
        eigvec: 3x3 matrix whose COLUMNS are the eigenvectors (rows are R, G, B).
        mean_image: optional small mean image [h, w, 3] as nested tuples; when present the paper's
            mean-image subtraction is used (the image is resized to the crop geometry), else the
            per-channel mean. Use `per_channel()` to drop it.
        source: where the numbers come from (free text, for humans).
        num_images: how many images they were computed from (None for published values).
    """

    mean_rgb: tuple[float, float, float]
    eigval: tuple[float, float, float]
    eigvec: tuple[tuple[float, float, float], ...]
    mean_image: tuple | None = None
    source: str = ""
    num_images: int | None = None

    def __post_init__(self) -> None:
        if len(self.mean_rgb) != 3 or len(self.eigval) != 3:
            raise ValueError(
                "mean_rgb and eigval need 3 values. "
                f"Received: mean_rgb={self.mean_rgb}, eigval={self.eigval}"
            )
        if np.asarray(self.eigvec).shape != (3, 3):
            raise ValueError(f"eigvec must be 3x3. Received: {self.eigvec}")
        if self.mean_image is not None:
            shape = np.asarray(self.mean_image).shape
            if len(shape) != 3 or shape[-1] != 3:
                raise ValueError(f"mean_image must be [h, w, 3]. Received shape: {shape}")

    @property
    def mean_image_array(self) -> np.ndarray | None:
        """The mean image as a float32 array [h, w, 3], or None."""
        if self.mean_image is None:
            return None
        return np.asarray(self.mean_image, dtype=np.float32)

    def per_channel(self) -> DatasetStats:
        """A copy that subtracts the per-channel mean instead of the mean image."""
        return dataclasses.replace(self, mean_image=None)

    def to_dict(self) -> dict:
        """JSON-ready dict in the format `tools/compute_stats.py` writes."""
        mean_image = None if self.mean_image is None else np.asarray(self.mean_image, np.float64)
        return {
            "format": FORMAT,
            "scale": "0..255",
            "mean_rgb": [float(v) for v in self.mean_rgb],
            "eigval": [float(v) for v in self.eigval],
            "eigvec": [[float(v) for v in row] for row in self.eigvec],
            "eigvec_layout": "columns are eigenvectors; rows are R, G, B",
            "mean_image": None if mean_image is None else np.round(mean_image, 3).tolist(),
            "source": self.source,
            "num_images": self.num_images,
        }

    @classmethod
    def from_dict(cls, data: dict) -> DatasetStats:
        """Inverse of `to_dict`; checks the format tag."""
        if data.get("format") != FORMAT:
            raise ValueError(f"Not an {FORMAT} stats dict. Received format: {data.get('format')!r}")
        mean_image = data.get("mean_image")
        return cls(
            mean_rgb=_tuple(data["mean_rgb"]),
            eigval=_tuple(data["eigval"]),
            eigvec=tuple(_tuple(row) for row in data["eigvec"]),
            mean_image=None if mean_image is None else _nested_tuple(mean_image),
            source=data.get("source", ""),
            num_images=data.get("num_images"),
        )


def _tuple(values: Sequence[float]) -> tuple:
    return tuple(float(v) for v in values)


def _nested_tuple(values: Sequence) -> tuple:
    return tuple(_nested_tuple(v) if isinstance(v, list | tuple) else float(v) for v in values)


IMAGENET = DatasetStats(
    mean_rgb=_tuple(255.0 * m for m in _IMAGENET_MEAN_01),
    eigval=_tuple(255.0 * e for e in _IMAGENET_EIGVAL_01),
    eigvec=_IMAGENET_EIGVEC,
    source="published: mean (0.485, 0.456, 0.406)x255; PCA from fb.resnet.torch, eigval x255",
)


def save_stats(stats: DatasetStats, path: str) -> None:
    """Write `stats` as JSON to `path` (parent directories are created)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w") as f:
        json.dump(stats.to_dict(), f, indent=1)
        f.write("\n")


def load_stats(path: str | None) -> DatasetStats:
    """Read a stats JSON file; None or "imagenet" gives the built-in ImageNet default."""
    if path is None or path == "imagenet":
        return IMAGENET
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Stats file {path!r} not found. Create it with "
            f"`python tools/compute_stats.py --dataset=... --output={path}` "
            "or pass no stats file to use the ImageNet default."
        )
    with open(path) as f:
        return DatasetStats.from_dict(json.load(f))


class StatsAccumulator:
    """Streams images in and accumulates the moments needed for `DatasetStats`.

    Pixel moments are accumulated in float64 (sums over 10^10 pixels stay exact enough); every image
    contributes per pixel, so large images weigh more, as in the paper's "over the training set".
    The mean image is accumulated at `mean_image_size` x `mean_image_size` (images must already be
    resized/cropped to one square geometry by the caller for it to mean anything).
    """

    def __init__(self, mean_image_size: int | None = None):
        self.mean_image_size = mean_image_size
        self.num_images = 0
        self.num_pixels = 0
        self.pixel_sum = np.zeros(3, np.float64)
        self.outer_sum = np.zeros((3, 3), np.float64)
        self.image_sum = None

    def update(self, image: np.ndarray, small_image: np.ndarray | None = None) -> None:
        """Adds one image [H, W, 3] on the 0..255 scale (and its small square version if kept)."""
        pixels = np.asarray(image, np.float64).reshape(-1, 3)
        self.num_images += 1
        self.num_pixels += pixels.shape[0]
        self.pixel_sum += pixels.sum(axis=0)
        self.outer_sum += pixels.T @ pixels
        if small_image is not None:
            small = np.asarray(small_image, np.float64)
            self.image_sum = small if self.image_sum is None else self.image_sum + small

    def result(self, source: str = "") -> DatasetStats:
        """The statistics of everything seen so far."""
        if self.num_pixels == 0:
            raise ValueError("No images were accumulated; cannot compute statistics.")
        mean = self.pixel_sum / self.num_pixels
        cov = self.outer_sum / self.num_pixels - np.outer(mean, mean)
        # Same convention as the ImageNet default: eigenvalues of the 0..1-scale covariance, x255.
        eigval, eigvec = np.linalg.eigh(cov / 255.0**2)
        order = np.argsort(eigval)[::-1]
        eigval = np.maximum(eigval[order], 0.0) * 255.0
        eigvec = eigvec[:, order]
        eigvec = eigvec * np.where(eigvec.sum(axis=0) > 0, -1.0, 1.0)  # Sign as fb.resnet.torch.
        mean_image = None
        if self.image_sum is not None:
            mean_image = _nested_tuple(np.round(self.image_sum / self.num_images, 3).tolist())
        return DatasetStats(
            mean_rgb=_tuple(mean),
            eigval=_tuple(eigval),
            eigvec=tuple(_tuple(row) for row in eigvec),
            mean_image=mean_image,
            source=source,
            num_images=self.num_images,
        )


def compute_dataset_stats(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    max_images: int = 20_000,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    mean_image_size: int = 32,
) -> DatasetStats:
    """Streams a split through the Sec. 2 rescale (undecodable images skipped) and accumulates."""
    split = split or sources.dataset_info(name, data_dir, manual_dir).train_split
    resize_size = resize_size or geometry.default_resize_size(image_size)

    @tf.autograph.experimental.do_not_convert
    def to_square(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
        image = example["image"]
        if image.dtype == tf.string:
            image = pixels.decode_image(image)
        square = geometry.resize_shorter_and_center_crop(image, resize_size)
        small = (
            geometry.resize(square, mean_image_size, mean_image_size)
            if mean_image_size
            else tf.zeros([0])
        )
        return square, small

    ds = sources.load_split(name, split, data_dir=data_dir, manual_dir=manual_dir)
    if max_images:
        ds = ds.take(max_images)
    ds = ds.map(to_square, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    accumulator = StatsAccumulator(mean_image_size or None)
    for i, (square, small) in enumerate(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()):
        accumulator.update(square, small if mean_image_size else None)
        if (i + 1) % 1000 == 0:
            logging.info("%d images", i + 1)
    source = f"tools/compute_stats.py --dataset={name} --split={split} ({resize_size}px squares)"
    return accumulator.result(source)
