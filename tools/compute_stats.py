"""Computes a dataset's mean (per channel and a small mean image) and RGB PCA, writes stats JSON.

    python tools/compute_stats.py --dataset=fashion_mnist --output=/tmp/fmnist_stats.json
    python tools/compute_stats.py --dataset=imagenet2012 --manual_dir=/data/ilsvrc \
        --max_images=50000 --output=imagenet_stats.json     # ~10 min on 2 cores

Statistics are taken over images as the network's preprocessing sees them before cropping (Sec. 2:
shorter side -> resize_size, centre square), on the 0..255 scale, from the first --max_images
training images in TFDS's (shuffled) file order. The output is read by `stats.load_stats` (training
`--stats_file`, export). Undecodable images are skipped.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from alexnet_keras import datasets, preprocessing, stats  # noqa: E402
from alexnet_keras.constants import IMAGE_SIZE  # noqa: E402


def define_flags() -> None:
    flags.DEFINE_string(
        "dataset", "fashion_mnist", "imagenet2012, fashion_mnist, folder:<path>, or a TFDS name."
    )
    flags.DEFINE_string("split", None, "Split to use (default: the dataset's training split).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_string("manual_dir", None, "Directory of raw files (ImageNet tars, IDX files).")
    flags.DEFINE_string("output", None, "Where to write the stats JSON.", required=True)
    flags.DEFINE_integer("max_images", 20_000, "Use at most this many images (0 = all).")
    flags.DEFINE_integer("image_size", IMAGE_SIZE, "Network input size; the rescale size follows.")
    flags.DEFINE_integer("resize_size", None, "Rescale size (default: 256/227 * image_size).")
    flags.DEFINE_integer("mean_image_size", 32, "Side of the stored mean image (0: none).")


def compute_stats(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    max_images: int = 20_000,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    mean_image_size: int = 32,
) -> stats.DatasetStats:
    """The library half of the tool: streams the split through the Sec. 2 rescale, accumulates."""
    split = split or datasets.dataset_info(name, data_dir, manual_dir).train_split
    resize_size = resize_size or preprocessing.default_resize_size(image_size)

    def to_square(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
        image = example["image"]
        if image.dtype == tf.string:
            image = preprocessing.decode_image(image)
        square = preprocessing.resize_shorter_and_center_crop(image, resize_size)
        small = (
            preprocessing.resize(square, mean_image_size, mean_image_size)
            if mean_image_size
            else tf.zeros([0])
        )
        return square, small

    ds = datasets.load_split(name, split, data_dir=data_dir, manual_dir=manual_dir)
    if max_images:
        ds = ds.take(max_images)
    ds = ds.map(to_square, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    accumulator = stats.StatsAccumulator(mean_image_size or None)
    for i, (square, small) in enumerate(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()):
        accumulator.update(square, small if mean_image_size else None)
        if (i + 1) % 1000 == 0:
            logging.info("%d images", i + 1)
    source = f"tools/compute_stats.py --dataset={name} --split={split} ({resize_size}px squares)"
    return accumulator.result(source)


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    result = compute_stats(
        f.dataset,
        f.split,
        data_dir=f.data_dir,
        manual_dir=f.manual_dir,
        max_images=f.max_images,
        image_size=f.image_size,
        resize_size=f.resize_size,
        mean_image_size=f.mean_image_size,
    )
    stats.save_stats(result, f.output)
    logging.info(
        "%d images: mean %s, eigval %s -> %s",
        result.num_images,
        [round(v, 2) for v in result.mean_rgb],
        [round(v, 3) for v in result.eigval],
        f.output,
    )
    print(
        f"wrote {f.output}: mean_rgb={[round(v, 2) for v in result.mean_rgb]} "
        f"eigval={[round(v, 3) for v in result.eigval]} images={result.num_images}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
