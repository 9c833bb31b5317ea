"""Training callbacks: the paper's learning-rate rule, resumable checkpoints, a NaN stop, best/last.

Every piece of state that a resumed run needs is either in the TF checkpoint (weights, momentum,
step) or derived from files written at epoch ends, so restarting the same command continues at
the same step, epoch and learning rate.
"""

from __future__ import annotations

import json
import math
import os

import keras
import tensorflow as tf
from absl import logging

from alexnet_keras import filter_grid, keras_file, run_files

FILTERS_TAG = "conv1_filters"  # TensorBoard image tag of the conv1 grid.


def plateau_drops(val_errors: list[float], patience: int, max_drops: int) -> int:
    """How often the rate has been divided by 10 after these epochs (Sec. 5).

    The paper divides the rate by 10 "when the validation error rate stopped improving with the
    current learning rate"; here: after `patience` consecutive epochs without a new best error,
    at most `max_drops` times. Waiting restarts after each drop.
    """
    best, wait, drops = math.inf, 0, 0
    for error in val_errors:
        if error < best:
            best, wait = error, 0
            continue
        wait += 1
        if wait >= patience and drops < max_drops:
            drops, wait = drops + 1, 0
    return drops


def step_drops(epoch: int, boundaries: tuple[int, ...]) -> int:
    """How many boundaries (in epochs) lie at or before `epoch` (0-based)."""
    return sum(epoch >= b for b in boundaries)


class LearningRateController(keras.callbacks.Callback):
    """Sets lr = base / 10**drops at each epoch start and logs it; keeps val errors on disk.

    The drop count is recomputed from the recorded validation errors of the epochs before the
    current one, so a resumed run gets exactly the rate it would have had.
    """

    def __init__(
        self,
        base_lr: float,
        schedule: str,
        state_dir: str,
        patience: int = 3,
        max_drops: int = 3,
        boundaries: tuple[int, ...] = (),
        monitor: str = "val_top1",
        write_state: bool = True,
    ):
        super().__init__()
        self.write_state = write_state  # Only the chief writes under multi-worker training.
        self.base_lr = base_lr
        self.schedule = schedule
        self.patience = patience
        self.max_drops = max_drops
        self.boundaries = tuple(boundaries)
        self.monitor = monitor
        self.path = os.path.join(state_dir, run_files.LR_STATE_FILE)
        self.errors: dict[int, float] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.errors = {int(k): v for k, v in json.load(f)["val_top1_error"].items()}

    def rate_for_epoch(self, epoch: int) -> float:
        if self.schedule == "plateau":
            history = [self.errors[e] for e in sorted(self.errors) if e < epoch]
            drops = plateau_drops(history, self.patience, self.max_drops)
        elif self.schedule == "step":
            drops = step_drops(epoch, self.boundaries)
        else:
            drops = 0
        return self.base_lr / 10.0**drops

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        rate = self.rate_for_epoch(epoch)
        if not math.isclose(float(self.model.optimizer.learning_rate.numpy()), rate):
            logging.info("Epoch %d: learning rate %g", epoch + 1, rate)
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        if self.monitor in logs:
            self.errors = {e: v for e, v in self.errors.items() if e < epoch}
            self.errors[epoch] = 1.0 - float(logs[self.monitor])
            if self.write_state:
                _write_json_atomically(self.path, {"val_top1_error": self.errors})


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the run's state every `every_steps` steps and, last of all, at each epoch end.

    The step comes from the host's own count (no device read per step): periodic saves happen
    before the step that would follow, and an epoch's last step is saved only after its validation
    and its history row, so a kill between the two resumes before it and replays it. A non-finite
    loss is noticed at the next save, which is then skipped, so the newest checkpoint on disk is
    always good; `failed_step` tells the caller what happened.
    """

    def __init__(self, state: object, every_steps: int, steps_per_epoch: int, start_step: int):
        super().__init__()
        self.state = state  # A checkpoints.RunState.
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        self.saved_step = start_step
        self._epoch_start = start_step
        self.failed_step: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Step 0, so there is always a good checkpoint to go back to. Decided by the step every
        # worker resumed at, not by its own directory: saving is collective under multi-worker.
        if self.saved_step == 0:
            self.state.save(0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = max(epoch * self.steps_per_epoch, self.saved_step)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = self._epoch_start + batch  # Steps taken so far.
        # Crossed a multiple of every_steps (with steps_per_execution > 1 it may not land on one).
        if step // self.every_steps > self.saved_step // self.every_steps:
            self._save(step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._save((epoch + 1) * self.steps_per_epoch)

    def _save(self, step: int) -> None:
        if self.failed_step is not None:
            return
        first_bad = int(self.state.first_bad_step.numpy())
        if first_bad >= 0:
            self.failed_step = first_bad
            self.model.stop_training = True
            return
        self.state.save(step)
        self.saved_step = step


class StopOnCtrlC(keras.callbacks.Callback):
    """Ctrl-C stops training at the next batch's beginning, where nothing is half done.

    Raised at once, a KeyboardInterrupt lands wherever Python happens to be: inside a `__del__`
    (TF and Keras run many during `fit`) Python only prints "Exception ignored" and training goes
    on; inside C code that called back into Python it can come out as another error after TF has
    printed a traceback. So while `fit` runs, `handle_sigint` (the train command's SIGINT
    handler) only remembers the signal; a second Ctrl-C, or one outside `fit`, stops at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False
        self.training = False

    def handle_sigint(self, signum: int, frame: object) -> None:
        if self.training and not self.interrupted:
            self.interrupted = True
            # A raw write: the handler may run while the main thread is inside sys.stderr.
            os.write(2, b"\nCtrl-C: stopping at the next batch (press it again to stop now).\n")
            return
        self.interrupted = True
        raise KeyboardInterrupt

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.training = True

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.interrupted:  # At a batch's beginning: no logs to wait for, no host sync.
            raise KeyboardInterrupt

    on_test_batch_begin = on_train_batch_begin

    def on_train_end(self, logs: dict | None = None) -> None:
        self.training = False
        if self.interrupted:  # After the last batch: the final evaluation is not waited for.
            raise KeyboardInterrupt


class RestoredEpochMetrics(keras.callbacks.Callback):
    """Puts back the running metric sums of an epoch resumed midway (Keras resets them when an
    epoch begins), so the epoch's history row equals an uninterrupted run's."""

    def __init__(self, sums: list):
        super().__init__()
        self.pending = list(sums)  # (variable, value) pairs: `RunState.metric_sums()`.

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for variable, value in self.pending:
            variable.assign(value)
        self.pending = []


class ValidationCount(keras.callbacks.Callback):
    """Adds `val_examples` (how many images validation evaluated) to the epoch's logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        counts = {v.path: v for v in self.model.metrics_variables}
        if logs is not None and "val_top1" in logs and "top1/count" in counts:
            logs["val_examples"] = int(counts["top1/count"].numpy())  # Holds validation's now.


class ModelSaver(keras.callbacks.Callback):
    """Writes `last.keras` at every epoch end and `best.keras` when val top-1 improves."""

    def __init__(
        self,
        model_dir: str,
        monitor: str = "val_top1",
        completed_epochs: int = 0,
        val_errors: dict[int, float] | None = None,
        best_from: str = "",
    ):
        """`best_from`: the run directory whose best.json a resumed run continues from, if not
        `model_dir` (a multi-worker run's other workers save into throwaway directories, but
        must decide on best.keras as the chief does: saving is collective)."""
        super().__init__()
        self.model_dir = model_dir
        self.monitor = monitor
        self.best_path = os.path.join(model_dir, "best.json")
        self.best = -math.inf
        recorded = os.path.join(best_from or model_dir, "best.json")
        if os.path.exists(recorded):
            with open(recorded) as f:
                best = json.load(f)
            self.best = best[monitor]
            if best.get("epoch", 0) > completed_epochs:  # From an epoch the resumed run redoes:
                errors = (val_errors or {}).items()  # the best of the epochs that stand.
                kept = [1.0 - error for epoch, error in errors if epoch < completed_epochs]
                self.best = max(kept, default=-math.inf)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return
        network = self.model.network  # Saved without the training model's layout (towers).
        directory = self.model_dir
        keras_file.save(network, os.path.join(directory, run_files.LAST_FILE), directory)
        value = logs.get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            keras_file.save(network, os.path.join(directory, run_files.BEST_FILE), directory)
            _write_json_atomically(self.best_path, {self.monitor: self.best, "epoch": epoch + 1})


class BadImageCounter(keras.callbacks.Callback):
    """Logs how many undecodable images the input pipeline skipped, each epoch (also to history)."""

    def __init__(self, log: object):
        super().__init__()
        self.log = log  # A bad_data.BadImageLog.

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        count = self.log.log_summary()
        if logs is not None:
            logs["skipped_images"] = count


class FilterImageCallback(keras.callbacks.Callback):
    """Writes conv1's filter grid as a TensorBoard image (and each column's saturation as a
    scalar) at the end of every `every_n_epochs`-th epoch, so the two columns' specialisation can
    be watched while training. Step = the 0-based epoch, as Keras's TensorBoard callback uses.

    Args:
        log_dir: TensorBoard run directory, e.g. `<model_dir>/logs/filters`.
        every_n_epochs: write every n epochs.
        scale: upscaling of each 11x11 kernel.
    """

    def __init__(self, log_dir: str, every_n_epochs: int = 1, scale: int = 4):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be >= 1. Received: {every_n_epochs}")
        self.log_dir = log_dir
        self.every_n_epochs = every_n_epochs
        self.scale = scale
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        network = getattr(self.model, "network", self.model)  # A TrainingModel's, or any model.
        grid = filter_grid.model_filter_grid(network, self.scale)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            description = "conv1 kernels, one panel per column (Fig. 3)"
            tf.summary.image(FILTERS_TAG, grid.image[None], step=epoch, description=description)
            for c, value in enumerate(grid.saturation):
                tf.summary.scalar(f"conv1_saturation/column_{c}", value, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _write_json_atomically(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
