"""Runs the training command's code with a SIGKILL at a chosen point, for the resume tests.

    python tests/resume_run.py --kill_at=9 --kill_when=batch_end -- <training flags>

The flags after `--` are the training command's (`alexnet_keras.cli.train`), parsed by its own
flag definitions; `--kill_at=STEP --kill_when=batch_begin|batch_end` kills the process (SIGKILL,
no cleanup) when the run has taken STEP steps: at batch_begin after a checkpoint due at that step
was written, at batch_end before anything of that step is saved (e.g. between an epoch's last step
and its validation).
"""

import os
import signal
import sys

import keras
import tensorflow as tf
from absl import flags, logging

from alexnet_keras.cli import train as train_cli
from alexnet_keras.training import strategies
from alexnet_keras.training.trainer import run


class KillAt(keras.callbacks.Callback):
    """SIGKILLs the process when the run has taken `step` steps (see the module docstring)."""

    def __init__(self, step, when, start, steps_per_epoch):
        super().__init__()
        self.step, self.when, self.start = step, when, start
        self.steps_per_epoch = steps_per_epoch
        self.epoch_start = start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = max(epoch * self.steps_per_epoch, self.start)

    def on_train_batch_begin(self, batch, logs=None):
        if self.when == "batch_begin" and self.epoch_start + batch == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, batch, logs=None):
        if self.when == "batch_end" and self.epoch_start + batch + 1 == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    split = sys.argv.index("--")
    own, training = sys.argv[1:split], sys.argv[split + 1 :]
    kill_at = int(next((a.split("=")[1] for a in own if a.startswith("--kill_at=")), "0"))
    when = next((a.split("=")[1] for a in own if a.startswith("--kill_when=")), "batch_end")
    logging.set_verbosity(logging.INFO)  # As app.run would: the run's own messages.
    train_cli.define_flags()
    train_cli.define_run_flags()
    flags.FLAGS(["train", *training])
    config = train_cli.config_from_flags()
    if config.logical_devices:
        strategies.split_logical_devices(config.logical_devices)
    checkpoint = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    start = int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0
    callbacks = [KillAt(kill_at, when, start, config.steps_per_epoch)] if kill_at else []
    run(config, allow_changes=flags.FLAGS.allow_changes, callbacks=callbacks)


if __name__ == "__main__":
    main()
