"""tf.data input pipelines for training and evaluation: source -> order -> preprocess -> batch.

    ds = build_dataset("imagenet2012", "train", batch_size=128, training=True, seed=run_seed,
                       start=step * 128, manual_dir="/data/ilsvrc")
    # yields (images float32 [128, 227, 227, 3], labels int32 [128]), forever
    # (uint8_pixels=True: ((uint8 crops, float32 RGB shifts [128, 3]), labels), see pixels.py)

Training reads the endless stream of `order.training_stream`: passes over the split, each a fresh
permutation drawn from (seed, pass), and example p of the stream is a pure function of (seed, p).
Every random crop/flip/lighting draw is keyed by (seed, p) too, so a run restarted at the position
its checkpoint recorded continues exactly where it stopped. Evaluation reads the split once, in
stored order (predictions match files).

Distribution: call it from `strategy.distribute_datasets_from_function(lambda ctx: build_dataset(
..., batch_size=ctx.get_per_replica_batch_size(global_batch), input_context=ctx))`; each input
pipeline then reads its own part of every pass and batches per replica.

Bad data: undecodable or truncated images are skipped, counted and logged, or with `strict=True`
stop the run naming the file (see `bad_data.py`). In the training stream a skipped image's slot is
filled by the next good one, so every step still consumes exactly its batch of positions. PNGs
named .JPEG decode normally.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from alexnet_keras.constants import IMAGE_SIZE
from alexnet_keras.data import geometry, pixels, preprocessing
from alexnet_keras.data.bad_data import BadImageLog, bad_images, cores, guarded_map
from alexnet_keras.data.order import training_stream
from alexnet_keras.data.sources import DatasetInfo, dataset_info, load_split, training_split
from alexnet_keras.data.stats import IMAGENET, DatasetStats

__all__ = [
    "BadImageLog",
    "DatasetInfo",
    "bad_images",
    "build_dataset",
    "dataset_info",
    "preprocess_examples",
]

DEFAULT_SHUFFLE_BUFFER = 4096  # ~450 MB of ImageNet JPEG bytes in the shuffle window.


def random_seed() -> int:
    """A fresh data seed, for runs without --seed (the trainer records it in the run)."""
    return int(np.random.default_rng().integers(1, 2**31 - 1))


@tf.autograph.experimental.do_not_convert
def _position_last(position: tf.Tensor, example: dict) -> tuple[dict, tf.Tensor]:
    return example, position


def preprocess_examples(
    ds: tf.data.Dataset,
    *,
    batch_size: int,
    training: bool,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    stats: DatasetStats | None = None,
    augment: bool = True,
    lighting_std: float = 0.1,
    ten_crop: bool = False,
    seed: int | None = None,
    strict: bool = False,
    repeat: bool | int | None = None,
    drop_remainder: bool | None = None,
    bad_image_log: BadImageLog | None = None,
    uint8_pixels: bool = False,
) -> tf.data.Dataset:
    """Turns raw examples into (images, labels) batches; see `build_dataset` for the arguments.

    For training, `ds` yields (example, position) pairs (`order.training_stream`), or plain
    examples, which are then numbered in the order given. Each example's augmentation draws are
    keyed by (seed, position). This half exists so benchmarks and tests can feed any raw dataset
    (e.g. JPEG files on disk) through exactly the training transformations.
    """
    stats = stats or IMAGENET
    resize_size = resize_size or geometry.default_resize_size(image_size)
    bad_log = bad_image_log or bad_images()
    if ten_crop and training:
        raise ValueError("ten_crop is an evaluation mode; received training=True.")
    if uint8_pixels and not training:
        raise ValueError("uint8_pixels is a training mode; received training=False.")
    if repeat is True or (repeat is not None and repeat is not False and repeat < 0):
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(repeat)
    if isinstance(ds.element_spec, dict):  # Not a training stream yet: number the examples.
        ds = ds.enumerate().map(_position_last)
    seed = random_seed() if seed is None else seed

    def transform(image: tf.Tensor, example_seed: tf.Tensor) -> tf.Tensor:
        if training:
            return preprocessing.preprocess_for_train(
                image,
                stats,
                image_size,
                resize_size,
                augment=augment,
                lighting_std=lighting_std,
                seed=example_seed,
                uint8_pixels=uint8_pixels,
            )
        if image.dtype == tf.string:
            image = pixels.decode_image(image)
        return preprocessing.preprocess_for_eval(image, stats, image_size, resize_size, ten_crop)

    # Plain Python (no tensor-dependent branches): AutoGraph's conversion of the preprocessing
    # cost ~1.3 s of every run's start-up and buys nothing.
    @tf.autograph.experimental.do_not_convert
    def map_fn(example: dict, position: tf.Tensor) -> tuple:
        example_seed = tf.stack([tf.constant(seed, tf.int64), position])
        return transform(example["image"], example_seed), example["label"]

    # Order is kept everywhere: positions must match what a step consumed (and evaluation's
    # predictions the files); measured no slower than unordered maps here. One call in flight per
    # core, with the autotuner off (`finish`): the most the autotuner would give the maps.
    parallel = {"num_parallel_calls": cores(), "deterministic": True}
    if ds.element_spec[0]["image"].dtype != tf.string:
        ds = ds.map(map_fn, **parallel)  # Arrays cannot be corrupt.
    else:
        ds = guarded_map(ds, map_fn, bad_log, strict)
    drop_remainder = training if drop_remainder is None else drop_remainder
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, **parallel)
    return finish(ds)


def finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    """How every stream a run reads ends: in order, prefetching, tf.data's autotuner off.

    Off because under TF 2.21 freeing an autotuned iterator waits for the autotuner's thread to
    wake (its period doubles up to 60 s): every `fit` ended idle, 6 s after a 20-step run and 24 s
    after the demo's 235-step epoch. The same steps per second and losses without it (BUILD_NOTES,
    "Input pipeline").
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def build_dataset(
    name: str,
    split: str,
    *,
    batch_size: int,
    training: bool,
    image_size: int = IMAGE_SIZE,
    resize_size: int | None = None,
    stats: DatasetStats | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    augment: bool = True,
    lighting_std: float = 0.1,
    ten_crop: bool = False,
    seed: int | None = None,
    start: int = 0,
    strict: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool | int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    drop_remainder: bool | None = None,
    bad_image_log: BadImageLog | None = None,
    uint8_pixels: bool = False,
) -> tf.data.Dataset:
    """The batched input pipeline for one split of a named source.

    Args:
        name, split: source (see `datasets.py`: imagenet2012, fashion_mnist, folder:<path>, any
            TFDS name) and split ("train", "validation", "test", TFDS slicing like "train[:1%]").
        batch_size: examples per batch; with `input_context` the PER-REPLICA batch.
        training: the endless training stream, augmented (random crop, flip, lighting); else one
            pass in stored order, centre or 10 crops.
        image_size, resize_size: network input size and the rescale size (default 256:227 ratio).
        stats: mean/PCA statistics (default: ImageNet's published values).
        data_dir, manual_dir: TFDS data dir; directory of the user's raw files (ImageNet tars,
            Fashion-MNIST IDX files).
        augment: False trains on centre crops only. lighting_std: alpha std (0 disables).
        ten_crop: evaluation yields [B, 10, S, S, 3] (the paper's 10 crops).
        seed: the data seed: training order and augmentation (None: a fresh one).
        start: training only: the stream position to start at (examples this pipeline already
            delivered, e.g. step x global batch on one pipeline).
        strict: stop at the first undecodable image instead of skipping and counting it.
        input_context: from `distribute_datasets_from_function`; which input pipeline this is.
        repeat: evaluation only: None/False one pass, True or -1 forever, n times.
        shuffle_buffer: training on record shards: examples in the shuffle window.
        drop_remainder: default True when training (static batch shape), False for evaluation.
        bad_image_log: where skipped images are recorded (default: `bad_images()`).
        uint8_pixels: training only: yield ((uint8 crops [B, S, S, 3], float32 RGB shifts
            [B, 3]), labels), finished on the device by `pixels.shift_batch` (--input_dtype).

    Returns:
        Dataset of (images float32 [B, S, S, 3] or [B, 10, S, S, 3], labels int32 [B]).
    """
    if training:
        seed = random_seed() if seed is None else seed
        pipeline, pipelines = 0, 1
        if input_context is not None:
            pipeline, pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
        source = training_split(name, split, data_dir=data_dir, manual_dir=manual_dir)
        raw = training_stream(source, seed, start, pipeline, pipelines, window=shuffle_buffer)
        # Each pipeline draws its own augmentation (its positions repeat the others').
        seed = seed + 1_000_003 * pipeline
    else:
        raw = load_split(
            name, split, data_dir=data_dir, manual_dir=manual_dir, input_context=input_context
        )
    return preprocess_examples(
        raw,
        batch_size=batch_size,
        training=training,
        image_size=image_size,
        resize_size=resize_size,
        stats=stats,
        augment=augment,
        lighting_std=lighting_std,
        ten_crop=ten_crop,
        seed=seed,
        strict=strict,
        repeat=None if training else repeat,
        drop_remainder=drop_remainder,
        bad_image_log=bad_image_log,
        uint8_pixels=uint8_pixels,
    )
