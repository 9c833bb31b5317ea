"""tf.data input pipelines for training and evaluation: source -> shuffle -> preprocess -> batch.

    ds = build_dataset("imagenet2012", "train", batch_size=128, training=True,
                       manual_dir="/data/ilsvrc")
    # yields (images float32 [128, 227, 227, 3], labels int32 [128])

Distribution: call it from `strategy.distribute_datasets_from_function(lambda ctx: build_dataset(
..., batch_size=ctx.get_per_replica_batch_size(global_batch), input_context=ctx))`; each worker then
reads only its shard of the files and batches per replica. Map parallelism and prefetch are
AUTOTUNEd.

Determinism: with `deterministic=True` and a `seed`, file order, shuffle order and every random
crop/flip/lighting draw are fixed (augmentation uses stateless ops keyed by a per-example seed from
`tf.data.Dataset.random`, fresh each epoch), so two runs give identical batches.

Bad data: undecodable or truncated images are skipped, counted and logged, or with `strict=True`
stop the run naming the file (see `bad_data.py`). PNGs named .JPEG decode normally.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_keras.constants import IMAGE_SIZE
from alexnet_keras.data import geometry, pixels, preprocessing
from alexnet_keras.data.bad_data import BadImageLog, bad_images, guarded_map
from alexnet_keras.data.sources import DatasetInfo, dataset_info, load_split
from alexnet_keras.data.stats import IMAGENET, DatasetStats

__all__ = [
    "BadImageLog",
    "DatasetInfo",
    "bad_images",
    "build_dataset",
    "dataset_info",
    "preprocess_examples",
]

DEFAULT_SHUFFLE_BUFFER = 4096  # ~450 MB of ImageNet JPEG bytes; TFDS also shuffles its files.


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
    deterministic: bool = False,
    strict: bool = False,
    repeat: bool | int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    drop_remainder: bool | None = None,
    bad_image_log: BadImageLog | None = None,
) -> tf.data.Dataset:
    """Turns raw examples {"image", "label", "key"} into (images, labels) batches.

    See `build_dataset` for the arguments; this half exists so benchmarks and tests can feed any
    raw dataset (e.g. JPEG files on disk) through exactly the training transformations.
    """
    stats = stats or IMAGENET
    resize_size = resize_size or geometry.default_resize_size(image_size)
    bad_log = bad_image_log or bad_images()
    if ten_crop and training:
        raise ValueError("ten_crop is an evaluation mode; received training=True.")
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat is True or (repeat is not None and repeat is not False and repeat < 0):
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(repeat)
    # One int64 per example; each epoch draws fresh ones (rerandomize), reproducibly under a seed.
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))

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
            )
        if image.dtype == tf.string:
            image = pixels.decode_image(image)
        return preprocessing.preprocess_for_eval(image, stats, image_size, resize_size, ten_crop)

    def map_fn(example: dict, random: tf.Tensor) -> tuple:
        example_seed = tf.stack([random, tf.constant(0, tf.int64)])
        return transform(example["image"], example_seed), example["label"]

    parallel = {"num_parallel_calls": tf.data.AUTOTUNE}
    if ds.element_spec[0]["image"].dtype != tf.string:
        # Arrays cannot be corrupt. Evaluation keeps the source order (predictions match files).
        ds = ds.map(map_fn, deterministic=deterministic or not training, **parallel)
    else:
        ds = guarded_map(ds, map_fn, bad_log, strict)
    drop_remainder = training if drop_remainder is None else drop_remainder
    ds = ds.batch(
        batch_size,
        drop_remainder=drop_remainder,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = True
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
    deterministic: bool = False,
    strict: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool | int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    drop_remainder: bool | None = None,
    bad_image_log: BadImageLog | None = None,
) -> tf.data.Dataset:
    """The batched input pipeline for one split of a named source.

    Args:
        name, split: source (see `datasets.py`: imagenet2012, fashion_mnist, folder:<path>, any
            TFDS name) and split ("train", "validation", "test", TFDS slicing like "train[:1%]").
        batch_size: examples per batch; with `input_context` the PER-REPLICA batch.
        training: shuffle and augment (random crop, flip, lighting); else centre/10-crop eval.
        image_size, resize_size: network input size and the rescale size (default 256:227 ratio).
        stats: mean/PCA statistics (default: ImageNet's published values).
        data_dir, manual_dir: TFDS data dir; directory of the user's raw files (ImageNet tars,
            Fashion-MNIST IDX files).
        augment: False trains on centre crops only. lighting_std: alpha std (0 disables).
        ten_crop: evaluation yields [B, 10, S, S, 3] (the paper's 10 crops).
        seed, deterministic: with both, the order and the augmentation are reproducible.
        strict: stop at the first undecodable image instead of skipping and counting it.
        input_context: from `distribute_datasets_from_function`; reads only this worker's shard.
        repeat: None/False one pass (Keras re-iterates per epoch), True or -1 forever, n times.
        shuffle_buffer: examples in the shuffle buffer (training only).
        drop_remainder: default True when training (static batch shape), False for evaluation.
        bad_image_log: where skipped images are recorded (default: `bad_images()`).

    Returns:
        Dataset of (images float32 [B, S, S, 3] or [B, 10, S, S, 3], labels int32 [B]).
    """
    if input_context is not None and seed is not None:
        seed = seed + 1_000_003 * input_context.input_pipeline_id  # Different draws per worker.
    raw = load_split(
        name,
        split,
        data_dir=data_dir,
        manual_dir=manual_dir,
        shuffle_files=training,
        seed=seed,
        input_context=input_context,
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
        deterministic=deterministic,
        strict=strict,
        repeat=repeat,
        shuffle_buffer=shuffle_buffer,
        drop_remainder=drop_remainder,
        bad_image_log=bad_image_log,
    )
