"""The training order: an endless stream of examples that is a pure function of (seed, position).

A run's input pipeline yields example `position` p of its stream after p examples, whatever
happened before: the stream is cut into passes over the split, each a fresh permutation drawn from
(seed, pass), so restarting at the position a checkpoint recorded (step x examples per step) gives
exactly the examples the interrupted run would have seen next, without saving any iterator state.

  IndexedSplit (in-memory arrays, image folders): every pass is a global permutation of the
      example indices (`tf.random.experimental.index_shuffle`, O(1) memory); restarting costs
      nothing.
  ShardedSplit (TFDS's TFRecord shards, e.g. ImageNet's 1,024 training files): every pass reads
      the shards in a permuted order and shuffles windows of `window` consecutive examples (the
      memory of a shuffle buffer of that size); restarting reads at most one window, starting
      inside one shard.

With several input pipelines (multi-worker), pipeline i takes every n-th example (or shard) of
each pass, so the pipelines see disjoint parts of every pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

FOREVER = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class IndexedSplit:
    """A split whose examples are fetched by index: `fetch(index)` -> {"image", "label", "key"}."""

    num_examples: int
    fetch: Callable[[tf.Tensor], dict]


@dataclasses.dataclass(frozen=True)
class ShardedSplit:
    """A split stored as record files: shard i holds `takes[i]` records after `skips[i]`.

    `parse(record, key)` turns one serialized record into {"image", "label", "key"}.
    """

    files: tuple[str, ...]
    skips: tuple[int, ...]
    takes: tuple[int, ...]
    parse: Callable[[tf.Tensor, tf.Tensor], dict]

    @property
    def num_examples(self) -> int:
        return sum(self.takes)


def _permutation(num: int, seed: int, pass_number: tf.Tensor | int) -> tf.Tensor:
    """A permutation of range(num) drawn from (seed, pass): index_shuffle of every index."""
    pass_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(pass_number, tf.int64)])
    indices = tf.range(num, dtype=tf.int64)
    return tf.random.experimental.index_shuffle(indices, pass_seed, tf.constant(num - 1, tf.int64))


def _indexed(split: IndexedSplit, seed: int, start: int, pipeline: int, pipelines: int):
    per_pass = split.num_examples // pipelines  # Equal passes for every pipeline.
    if per_pass < 1:
        raise ValueError(f"{split.num_examples} examples cannot feed {pipelines} input pipelines.")
    max_index = tf.constant(split.num_examples - 1, tf.int64)

    @tf.autograph.experimental.do_not_convert
    def example(position: tf.Tensor) -> tuple[dict, tf.Tensor]:
        pass_number, offset = position // per_pass, position % per_pass
        pass_seed = tf.stack([tf.constant(seed, tf.int64), pass_number])
        index = tf.random.experimental.index_shuffle(
            offset * pipelines + pipeline, pass_seed, max_index
        )
        return split.fetch(index), position

    positions = tf.data.Dataset.range(start, FOREVER)
    return positions.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _pass_shards(split: ShardedSplit, seed: int, pass_number: tf.Tensor, pipeline: int,
                 pipelines: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:  # fmt: skip
    """This pipeline's shards of one pass, in the pass's order: (files, skips, takes)."""
    order = _permutation(len(split.files), seed, pass_number)[pipeline::pipelines]
    return (
        tf.gather(tf.constant(split.files), order),
        tf.gather(tf.constant(split.skips, tf.int64), order),
        tf.gather(tf.constant(split.takes, tf.int64), order),
    )


def _pass_length(split: ShardedSplit, seed: int, pass_number: int, pipeline: int,
                 pipelines: int) -> int:  # fmt: skip
    _, _, takes = _pass_shards(split, seed, pass_number, pipeline, pipelines)
    return int(tf.reduce_sum(takes))


def _sharded(split: ShardedSplit, seed: int, start: int, pipeline: int, pipelines: int,
             window: int):  # fmt: skip
    if len(split.files) < pipelines:
        raise ValueError(f"{len(split.files)} shards cannot feed {pipelines} input pipelines.")
    first_pass, offset = 0, start  # Passes differ in length: find the start's pass in Python.
    while offset >= (length := _pass_length(split, seed, first_pass, pipeline, pipelines)):
        first_pass, offset = first_pass + 1, offset - length

    def one_pass(pass_number: tf.Tensor) -> tf.data.Dataset:
        files, skips, takes = _pass_shards(split, seed, pass_number, pipeline, pipelines)
        skip = tf.where(pass_number == first_pass, tf.constant(offset, tf.int64), 0)
        first_window = skip // window
        # Start reading at the first record of that window: shard j, q records in.
        before = first_window * window
        ends = tf.cumsum(takes)
        j = tf.searchsorted(ends, [before], side="right")[0]
        q = before - (ends[j] - takes[j])
        skips = tf.tensor_scatter_nd_add(skips, [[j]], [q])[j:]
        takes = tf.tensor_scatter_nd_sub(takes, [[j]], [q])[j:]
        starts = tf.tensor_scatter_nd_add(tf.zeros_like(takes), [[0]], [q])

        def shard(file: tf.Tensor, file_skip: tf.Tensor, take: tf.Tensor, first: tf.Tensor):
            records = tf.data.TFRecordDataset(file).skip(file_skip).take(take)
            index = tf.data.Dataset.range(first, FOREVER)
            keys = index.map(lambda i: tf.strings.join([file, ":", tf.strings.as_string(i)]))
            return tf.data.Dataset.zip(records, keys)

        records = tf.data.Dataset.from_tensor_slices((files[j:], skips, takes, starts))
        records = records.flat_map(shard).batch(window)

        def shuffle(number: tf.Tensor, batch: tuple) -> tf.data.Dataset:
            window_number = pass_number * 1_000_003 + first_window + number
            window_seed = tf.stack([tf.constant(seed, tf.int64), window_number])
            size = tf.shape(batch[0], out_type=tf.int64)[0]
            order = tf.random.experimental.index_shuffle(tf.range(size), window_seed, size - 1)
            shuffled = tf.nest.map_structure(lambda t: tf.gather(t, order), batch)
            return tf.data.Dataset.from_tensor_slices(shuffled)

        return records.enumerate().flat_map(shuffle).skip(skip - before)

    examples = tf.data.Dataset.range(first_pass, FOREVER).flat_map(one_pass)
    examples = examples.map(split.parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return tf.data.Dataset.zip(examples, tf.data.Dataset.range(start, FOREVER))


def training_stream(
    split: IndexedSplit | ShardedSplit,
    seed: int,
    start: int = 0,
    pipeline: int = 0,
    pipelines: int = 1,
    window: int = 4096,
) -> tf.data.Dataset:
    """(example, position) pairs of one input pipeline's endless stream, from `start` on.

    Args:
        split: the training split's examples.
        seed: the run's data seed; the same seed gives the same stream.
        start: position of the first element (examples this pipeline has already delivered).
        pipeline, pipelines: this input pipeline's index and how many there are.
        window: shuffle window of a sharded split (its examples held in memory at once).
    """
    if isinstance(split, IndexedSplit):
        stream = _indexed(split, seed, start, pipeline, pipelines)
    else:
        stream = _sharded(split, seed, start, pipeline, pipelines, window)
    # Known endless (flat_map hides it): the bad-image guard then fills slots, Keras expects no end.
    return stream.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
