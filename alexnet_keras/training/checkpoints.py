"""A run's resumable state: what a TF checkpoint holds, and going back to the last good one.

Everything that shapes what comes next is in the checkpoint or a pure function of it: weights,
momentum, the step counter (which also gives the input stream's position), the first step with a
non-finite loss, the epoch's running metric sums, each replica's own (so a resumed epoch logs the
same history row, to the last bit), and dropout's RNG state (Keras's seed generators are not
tracked by the model's checkpoint). The data seed is in run.json. Checkpoints are written by
`tf.train.CheckpointManager`, whose state file is replaced atomically after the data, so a kill
mid-write leaves the previous one in force.
"""

from __future__ import annotations

import glob
import os
import shutil

import keras
import tensorflow as tf
from absl import logging

CORRUPT_DIR = "corrupt"  # Unreadable checkpoints are moved here, never deleted.


def replica_parts(variable: tf.Variable) -> tuple:
    """A variable's per-replica components in this process (itself where it is not distributed)."""
    return tuple(getattr(variable, "values", (variable,)))


def counter(name: str) -> tf.Variable:
    """An int64 step-like counter that one replica updates (create it in the strategy's scope)."""
    return tf.Variable(
        0 if name == "step" else -1, dtype=tf.int64, trainable=False, name=name,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )  # fmt: skip


class RunState:
    """The checkpointed state of a training run and its CheckpointManager.

    Attributes:
        step: global steps taken (every step counts, also float16 steps the loss scale skipped).
        first_bad_step: the first step whose running loss was not finite, or -1.
    """

    def __init__(
        self, model: keras.Model, directory: str, max_to_keep: int = 3, restore_from: str = ""
    ):
        """Saves into `directory`; restores from `restore_from` when given (a multi-worker run's
        other workers write throwaway checkpoints but resume from the chief's, read-only)."""
        self.step = counter("step")
        self.first_bad_step = counter("first_bad_step")
        self.metric_variables = [v.value for v in model.metrics_variables]
        # Metric sums are kept per replica and saved as their total, which a restore splits
        # evenly: the epoch's later steps then round differently (a history row 2 ulps off, seen
        # on two replicas). So each replica's own sums are saved too (`metric_sums`).
        self.metric_parts = [
            tf.Variable(tf.zeros([len(replica_parts(v))], v.dtype), trainable=False,
                        name="metric_parts", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            for v in self.metric_variables
        ]  # fmt: skip
        self.exact_parts = False  # Whether the restored checkpoint held this process's parts.
        self._replicas = tf.distribute.get_strategy().num_replicas_in_sync
        network = model.network  # The checkpoint holds the network as a run of 0.1 saved it.
        self.rng = [
            layer.seed_generator.state.value
            for layer in network.layers
            if hasattr(layer, "seed_generator")
        ]
        self.checkpoint = tf.train.Checkpoint(
            model=network, optimizer=model.optimizer, step=self.step,
            first_bad_step=self.first_bad_step, metrics=self.metric_variables, rng=self.rng,
            metric_parts=self.metric_parts,
        )  # fmt: skip
        self.directory = directory
        self.max_to_keep = max_to_keep
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)
        self.restore_from = restore_from

    def count_step(self, logs: dict) -> None:
        """Counts a train step and notes the first non-finite loss (`TrainingModel.after_step`).

        The optimizer's `iterations` does not advance on float16 steps the loss scale skips, so
        the run counts its steps itself (epochs, checkpoint names and input position follow it).
        """
        step = self.step.assign_add(1)
        bad = tf.logical_and(self.first_bad_step < 0, ~tf.math.is_finite(logs["loss"]))
        self.first_bad_step.assign(tf.where(bad, step, self.first_bad_step))

    def save(self, step: int) -> str:
        for parts, variable in zip(self.metric_parts, self.metric_variables):
            parts.assign(tf.stack([part.read_value() for part in replica_parts(variable)]))
        return self.manager.save(checkpoint_number=step)

    def metric_sums(self) -> list[tuple]:
        """(variable, value) pairs that put back the restored running metric sums: each replica's
        own where the checkpoint holds all of them (one process's replicas), else the totals,
        which TF splits evenly (an older checkpoint, or a chief's read by another worker): equal
        up to rounding."""
        pairs = []
        for parts, variable in zip(self.metric_parts, self.metric_variables):
            components = replica_parts(variable)
            if self.exact_parts and len(components) == self._replicas:
                pairs += zip(components, parts.numpy())
            else:
                pairs.append((variable, variable.numpy()))
        return pairs

    def restore_latest(self) -> int:
        """Restores the newest readable checkpoint and returns its step (0 if there is none).

        A checkpoint that cannot be read (truncated, corrupt) is moved to `corrupt/`, with a
        warning that names it, and the previous one is tried. Reading another's checkpoints
        (`restore_from`), unreadable ones are only skipped: moving them is their owner's job.
        """
        if self.restore_from:
            state = tf.train.get_checkpoint_state(self.restore_from)
            paths = list(state.all_model_checkpoint_paths) if state else []
        else:
            paths = self.manager.checkpoints
        for path in reversed(paths):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:
                if not self.restore_from:
                    moved = self._move_aside(path)
                    logging.warning(
                        "Checkpoint %s cannot be read (%s: %s); moved it to %s and going back to "
                        "the previous one.", path, type(error).__name__,
                        str(error).splitlines()[0], moved,
                    )  # fmt: skip
                continue
            names = (name for name, _ in tf.train.list_variables(path))
            self.exact_parts = any(name.startswith("metric_parts/") for name in names)
            logging.info("Resumed from %s at step %d.", path, int(self.step.numpy()))
            return int(self.step.numpy())
        if paths:
            raise ValueError(
                f"No checkpoint in {self.restore_from or self.directory} can be read (unreadable "
                f"ones are in {CORRUPT_DIR}/); start again in a new --model_dir."
            )
        return 0

    def _move_aside(self, path: str) -> str:
        target = os.path.join(self.directory, CORRUPT_DIR)
        os.makedirs(target, exist_ok=True)
        for file in glob.glob(path + ".*"):
            shutil.move(file, os.path.join(target, os.path.basename(file)))
        # The state file without `path`. Its timestamps must stay: a manager treats checkpoints
        # without one as kept forever and would never delete them.
        state = tf.train.get_checkpoint_state(self.directory)
        kept = [
            (p, t)
            for p, t in zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)
            if p != path
        ]
        if kept:
            tf.compat.v1.train.update_checkpoint_state(
                self.directory, kept[-1][0], all_model_checkpoint_paths=[p for p, _ in kept],
                all_model_checkpoint_timestamps=[t for _, t in kept],
                last_preserved_timestamp=state.last_preserved_timestamp,
            )  # fmt: skip
        else:  # A state file naming no checkpoint is "invalid" to TF: none at all instead.
            os.remove(os.path.join(self.directory, "checkpoint"))
        # A new manager reads the corrected list from the state file.
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, self.max_to_keep)
        return target
