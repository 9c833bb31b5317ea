"""Images/second of the training input pipeline vs raw `tf.io.decode_jpeg` on the same JPEGs.

    python tools/bench_input.py                       # synthetic 500x375 JPEGs, ~1 min on 2 cores
    python tools/bench_input.py --image_dir=/data/jpegs --num_images=2000

The training pipeline is the real one (`pipeline.preprocess_examples`): fused decode+crop -> resize
to 227 -> mean -> flip -> PCA lighting -> batch 128, with the bad-image guard. The bytes are held in
memory for both measurements, so disk speed does not enter. Without --image_dir, ImageNet-like
JPEGs are generated (500x375, quality 93, multi-scale texture, ~100 KB like ImageNet's mean).
Figures are printed per core: cores = CPUs this process may use.
"""

from __future__ import annotations

import glob
import io
import os
import time

from alexnet_keras.cli import common

common.load_tensorflow_quietly()  # Before TensorFlow is imported below.

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_keras.data import pipeline  # noqa: E402


def define_flags() -> None:
    flags.DEFINE_string("image_dir", None, "Directory of *.jpg/*.JPEG files (default: synthetic).")
    flags.DEFINE_integer("num_images", 512, "Distinct images held in memory.")
    flags.DEFINE_integer("batch_size", 128, "Batch size of the training pipeline.")
    flags.DEFINE_integer("image_size", 227, "Crop size.")
    flags.DEFINE_float("seconds", 8.0, "Minimum time per measurement (after warm-up).")
    flags.DEFINE_integer(
        "shorter_side",
        375,
        "Synthetic images are 4:3 with this shorter side; 256 "
        "is the paper's stored size (no resize needed in training).",
    )
    flags.DEFINE_integer("rounds", 3, "Alternating measurement rounds; the best is reported.")


def synthetic_jpegs(num: int, width: int = 500, height: int = 375, seed: int = 0) -> list[bytes]:
    """ImageNet-sized JPEGs with texture at several scales (so they compress like photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num):
        canvas = np.zeros((height, width, 3), np.float32)
        # Coarse shapes to pixel-level grain; sized to ImageNet's ~110 KB mean (138 GB / 1.28M).
        for cells, weight in ((4, 0.45), (16, 0.3), (64, 0.05), (height, 0.2)):
            noise = rng.random((cells, max(1, cells * width // height), 3)).astype(np.float32)
            noise = np.asarray(
                Image.fromarray((noise * 255).astype(np.uint8)).resize(
                    (width, height), Image.BICUBIC
                ),
                np.float32,
            )
            canvas += weight * noise
        buffer = io.BytesIO()
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=93)
        images.append(buffer.getvalue())
    return images


def load_jpegs(image_dir: str, num: int) -> list[bytes]:
    paths = sorted(
        p
        for ext in ("jpg", "jpeg", "JPEG", "JPG")
        for p in glob.glob(os.path.join(image_dir, "**", f"*.{ext}"), recursive=True)
    )
    if not paths:
        raise FileNotFoundError(f"No JPEG files under {image_dir}.")
    return [open(p, "rb").read() for p in paths[:num]]


def rate(ds: tf.data.Dataset, images_per_element: int, seconds: float) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process) after a warm-up.

    The CPU-second figure is the per-core throughput and stays meaningful when other processes
    share the machine (the wall figure then understates what the cores can do).
    """
    iterator = iter(ds)
    for _ in range(3):
        next(iterator)
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        next(iterator)
        count += images_per_element
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)


def _main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    data = (
        load_jpegs(f.image_dir, f.num_images)
        if f.image_dir
        else synthetic_jpegs(f.num_images, width=f.shorter_side * 4 // 3, height=f.shorter_side)
    )
    cores = len(os.sched_getaffinity(0))
    shapes = [tf.io.extract_jpeg_shape(d).numpy()[:2] for d in data[:50]]
    print(
        f"{len(data)} JPEGs, mean {np.mean([len(d) for d in data]) / 1e3:.0f} KB, "
        f"e.g. {shapes[0][1]}x{shapes[0][0]}; {cores} cores; batch {f.batch_size}"
    )
    source = tf.data.Dataset.from_tensor_slices(
        {
            "image": data,
            "label": np.zeros(len(data), np.int32),
            "key": [f"synthetic_{i}" for i in range(len(data))],
        }
    ).cache()

    raw = (
        source.repeat()
        .map(
            lambda ex: tf.shape(tf.io.decode_jpeg(ex["image"], channels=3)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        .batch(f.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    train = pipeline.preprocess_examples(
        source,
        batch_size=f.batch_size,
        training=True,
        image_size=f.image_size,
        repeat=True,
        shuffle_buffer=0,
    )
    results = {"raw tf.io.decode_jpeg": [], "training pipeline": []}
    for _ in range(f.rounds):  # Alternate, so both see the same background load.
        results["raw tf.io.decode_jpeg"].append(rate(raw, f.batch_size, f.seconds))
        results["training pipeline"].append(rate(train, f.batch_size, f.seconds))
    best = {}
    for name, runs in results.items():
        wall = max(r[0] for r in runs)
        per_cpu = max(r[1] for r in runs)
        best[name] = (wall, per_cpu)
        print(
            f"{name:22s}: {wall:7.1f} images/s wall ({wall / cores:6.1f} per core), "
            f"{per_cpu:6.1f} images per CPU-second   (best of {len(runs)})"
        )
    (raw_wall, raw_cpu), (train_wall, train_cpu) = best.values()
    print(
        f"pipeline / raw decode: {100 * train_wall / raw_wall:.0f}% (wall), "
        f"{100 * train_cpu / raw_cpu:.0f}% (per CPU-second)"
    )


def main() -> None:
    """`python tools/bench_input.py` and the console script `alexnet-bench-input`."""
    common.run(define_flags, _main)


if __name__ == "__main__":
    main()
