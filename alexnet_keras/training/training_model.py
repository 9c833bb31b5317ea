"""The network as training runs it: on one device, data parallel, or as the paper's towers.

`TrainingModel` wraps the reference network (whose `.keras` files, checkpoints and exports know
nothing of training) and adds what a training step needs around it: the towers' placement, the
uint8 crops finished on the device, per-replica dropout masks, and the run's step counter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from alexnet_keras.data import pixels
from alexnet_keras.layers import ColumnDropout
from alexnet_keras.training import towers as towers_lib


class TrainingModel(keras.Model):
    """`network` trained per the run's layout; `self.network` is what gets saved and exported.

    Args:
        network: the reference AlexNet (`build_alexnet`).
        towers: one device per column: column g of every layer runs on `towers[g]`, forward
            and backward (`training/towers.py`); None runs the network as it is.
        uint8_pixels: the training stream yields ((uint8 crops, RGB shifts), labels), finished
            into float32 images in the step, on the replica's device (`pixels.shift_batch`).
        vector_logs: each step's scalar logs as one-element vectors: under
            MultiWorkerMirroredStrategy Keras 3.15 averages them with strategy.reduce(axis=0),
            which needs a vector (tensorflow/tensorflow#72388).
    """

    def __init__(
        self,
        network: keras.Model,
        towers: Sequence[str] | None = None,
        uint8_pixels: bool = False,
        vector_logs: bool = False,
        **kwargs,
    ):
        super().__init__(name=network.name, **kwargs)
        self.network = network
        self.towers = tuple(towers) if towers else None
        self.uint8_pixels = uint8_pixels
        self.vector_logs = vector_logs
        if self.towers:
            towers_lib.check_network(network, self.towers)
        for layer in network.layers:  # One mask per replica and step (one per column: towers).
            if isinstance(layer, ColumnDropout) and not self.towers:
                layer.fast_call = per_replica_dropout
        self.after_step: Callable[[dict], None] | None = None  # The run's step counter.
        # Built with its network: Keras need not trace it on a first batch (a uint8 stream's
        # ((crops, shifts), labels) is not the network's input).
        self.built = True

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        if self.towers:
            return towers_lib.forward(self.network, self.towers, images, training)
        return self.network(images, training=training)

    def train_step(self, data: tuple) -> dict:
        if self.uint8_pixels:
            (crops, shifts), labels = data
            data = (pixels.shift_batch(crops, shifts), labels)
        logs = super().train_step(data)
        if self.after_step is not None:
            self.after_step(logs)
        return self._logs(logs)

    def test_step(self, data: tuple) -> dict:
        return self._logs(super().test_step(data))

    def _logs(self, logs: dict) -> dict:
        return {k: tf.reshape(v, [1]) for k, v in logs.items()} if self.vector_logs else logs


def per_replica_dropout(
    layer: ColumnDropout, inputs: tf.Tensor, training: bool = False
) -> tf.Tensor:
    """`ColumnDropout.call` with the replica's index folded into the seed.

    Keras's seed generator state is one value that every replica of a MirroredStrategy (and
    every worker) reads, so each drew the same mask: replica 1's example i was dropped exactly
    like replica 0's example i. Folding in `replica_id_in_sync_group` gives each replica its own
    masks, still a function of the checkpointed state (reproducible under --seed and on resume).
    """
    if not training or layer.rate == 0:
        return layer.at_test_time(inputs)
    context = tf.distribute.get_replica_context()  # None only outside strategy.run.
    replica = context.replica_id_in_sync_group if context else 0
    seed = tf.random.experimental.stateless_fold_in(
        tf.cast(layer.seed_generator.next(), tf.int64), replica
    )
    keep = tf.random.stateless_uniform(tf.shape(inputs), seed) >= layer.rate
    return layer.masked(inputs, keep)
