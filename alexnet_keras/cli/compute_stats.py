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

from absl import app, flags, logging

from alexnet_keras.cli import common
from alexnet_keras.constants import IMAGE_SIZE


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


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (not flags): {' '.join(argv[1:])}")
    from alexnet_keras.data import stats

    f = flags.FLAGS
    result = stats.compute_dataset_stats(
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


def main() -> None:
    """`python tools/compute_stats.py` and the console script `alexnet-compute-stats`."""
    common.run(define_flags, _main)


if __name__ == "__main__":
    main()
