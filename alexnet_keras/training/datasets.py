"""What a run trains and evaluates on: the configured source through the shared input pipeline,
one stream per input pipeline (tests pass their own tiny `Datasets` to `trainer.run`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf

from alexnet_keras.config import TrainConfig
from alexnet_keras.data import pipeline, sources, stats
from alexnet_keras.training import device_input

Stream = tf.data.Dataset | tf.distribute.DistributedDataset


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What a run trains and evaluates on.

    `train` is the endless training stream of global batches, or a function of the step it must
    start at (the run's own pipeline: a resumed run continues the stream exactly); validation and
    evaluation are one pass each, evaluation of 10-crop batches [batch, 10, size, size, 3] when
    the run asks for them. With `uint8_pixels` the training stream yields ((uint8 crops,
    RGB shifts), labels) and the step finishes them on the device (`pixels.shift_batch`).
    """

    train: Stream | Callable[[int], Stream]
    validation: tf.data.Dataset
    evaluation: tf.data.Dataset
    class_names: tuple[str, ...]
    steps_per_epoch: int
    eval_split: str
    uint8_pixels: bool = False

    def train_from(self, step: int) -> Stream:
        return self.train(step) if callable(self.train) else self.train


def make_datasets(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    data_stats: stats.DatasetStats,
    data_seed: int,
) -> Datasets:
    """The configured source through the shared input pipeline, one stream per input pipeline."""
    try:
        info = sources.dataset_info(config.dataset, config.data_dir, config.manual_dir)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"--dataset={config.dataset}: {error}") from error
    uint8_pixels = device_input.sends_uint8(config, data_stats)
    common = dict(
        image_size=config.image_size, resize_size=config.resize_size, stats=data_stats,
        data_dir=config.data_dir, manual_dir=config.manual_dir, strict=config.strict_data,
    )  # fmt: skip

    def train_from(step: int) -> Stream:
        def train_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            per_pipeline = config.batch_size // context.num_input_pipelines
            return pipeline.build_dataset(
                config.dataset, info.train_split, training=True, input_context=context,
                batch_size=context.get_per_replica_batch_size(config.batch_size),
                seed=data_seed, start=step * per_pipeline, augment=config.augment,
                lighting_std=config.lighting_std, uint8_pixels=uint8_pixels, **common,
            )  # fmt: skip

        if strategy.num_replicas_in_sync > 1 or config.distribution == "multi_worker":
            return strategy.distribute_datasets_from_function(train_fn)
        return train_fn(tf.distribute.InputContext())

    def eval_dataset(ten_crop: bool) -> tf.data.Dataset:
        return pipeline.build_dataset(
            config.dataset, info.eval_split, training=False, batch_size=config.batch_size,
            ten_crop=ten_crop, **common,
        )  # fmt: skip

    return Datasets(
        train=train_from,
        validation=eval_dataset(False),
        evaluation=eval_dataset(config.ten_crop_eval),
        class_names=info.class_names,
        steps_per_epoch=config.steps_per_epoch
        or math.ceil(info.num_train_examples / config.batch_size),
        eval_split=info.eval_split,
        uint8_pixels=uint8_pixels,
    )
