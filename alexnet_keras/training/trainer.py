"""The training run: `run(config, strategy=None, datasets=None)`, the paper's recipe (Sec. 5).

Tests inject a strategy (e.g. two logical CPUs) and tiny datasets; the command line
(`alexnet_keras.train`) passes neither and gets the configured strategy and input pipeline.
Rerunning the same command resumes the run exactly where its last checkpoint left it (see
`checkpoints.py` for what is saved and `resume.py` for what may change).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from absl import logging

from alexnet_keras import run_dir
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import pipeline, sources, stats
from alexnet_keras.layers import winograd
from alexnet_keras.model import build_alexnet
from alexnet_keras.training import callbacks as cb
from alexnet_keras.training import (
    device_input,
    evaluation,
    fine_tune,
    precision,
    resume,
    strategies,
)
from alexnet_keras.training.checkpoints import RunState
from alexnet_keras.training.optimizer import PaperSGD

Stream = tf.data.Dataset | tf.distribute.DistributedDataset
INITIAL_LOSS_SCALE = 2.0**15  # float16's dynamic loss scale starts here (Keras's default).


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


def compile_alexnet(
    config: TrainConfig, num_classes: int, towers: tuple[str, ...] | None, replicas: int
) -> keras.Model:
    """The training model, optimizer, loss and metrics; call inside the strategy's scope.

    Shared with tools/benchmark.py, so the benchmark times exactly the step that training runs.
    """
    model = build_alexnet(num_classes=num_classes, tower_devices=towers, **config.model_kwargs())
    fine_tune.check_freeze(config.freeze, model)
    for name in config.freeze:  # Before compiling: frozen layers get no gradient nor momentum.
        model.get_layer(name).trainable = False
    optimizer = PaperSGD(config.learning_rate, config.momentum, config.weight_decay)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, INITIAL_LOSS_SCALE)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
        # XLA under MirroredStrategy fails ("Trying to access resource ... located in device
        # CPU:1 from device CPU:0") and would ignore the towers' device pins.
        jit_compile=config.jit_compile and replicas == 1 and towers is None,
        steps_per_execution=config.steps_per_execution,
    )
    optimizer.build(model.trainable_variables)
    # Build the metrics (their variables, which checkpoints hold) and the loss now. Keras would
    # at the first fit by running the model on a stream's batch, which a uint8 stream's is not.
    labels, logits = tf.zeros([1], tf.int32), tf.zeros([1, num_classes])
    model.compute_metrics(None, labels, logits, None)
    model.compute_loss(y=labels, y_pred=logits)
    model.reset_metrics()
    return model


def run(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    datasets: Datasets | None = None,
    allow_changes: Sequence[str] = (),
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains (or resumes) per `config`, evaluates, writes metrics.json and returns the metrics.

    `allow_changes` names the recorded settings a resumed run may change (see `resume.py`);
    `callbacks` run after the run's own. The mixed-precision policy and conv3x3 algorithm the run
    sets are restored afterwards, so a run leaves no global state behind in the calling process.
    """
    previous_policy = keras.mixed_precision.global_policy()
    previous_algorithm = winograd.algorithm()
    try:
        return _run(config, strategy, datasets, tuple(allow_changes), list(callbacks))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        winograd.set_algorithm(previous_algorithm)


def _run(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None,
    datasets: Datasets | None,
    allow_changes: tuple[str, ...],
    extra_callbacks: list,
) -> dict:
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF work.
    if strategy is None:
        strategy, towers = strategies.make_strategy(config.distribution, config.devices)
    else:
        towers = tuple(config.devices) if config.distribution == "towers" else None
    chief = strategies.is_chief(strategy)
    data_stats = stats.load_stats(config.stats_file)
    computes_in = precision.resolve_precision(config.mixed_precision)
    resuming = resume.check_model_dir(config.model_dir)
    if resuming:
        config = resume.resumed_config(
            config.model_dir, config, data_stats, computes_in, allow_changes
        )
    record = resume.RunRecord.read(config.model_dir) if resuming else None
    data_seed = record.data_seed if record else config.seed or pipeline.random_seed()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        data_seed = strategies.chiefs_value(strategy, data_seed)  # One order for all workers.
    precision.set_precision(config.mixed_precision)
    winograd.set_algorithm(config.conv3x3_algorithm)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch_size={config.batch_size} is invalid: expected a multiple of the {replicas} "
            "replicas, so every replica gets the same share of the global batch."
        )
    if config.data_dir:
        os.makedirs(config.data_dir, exist_ok=True)  # TFDS prepares datasets into it.
    datasets = datasets or make_datasets(config, strategy, data_stats, data_seed)
    model_dir = config.model_dir
    if chief:
        _write_run_files(config, datasets, data_stats)

    with strategy.scope():
        model = compile_alexnet(config, len(datasets.class_names), towers, replicas)
        # Under multi-worker training every worker saves (saving is collective), the non-chief
        # ones into a throwaway directory; all resume from the chief's checkpoints.
        checkpoints = os.path.join(model_dir, run_dir.CHECKPOINT_DIR)
        if chief:
            save_dir, state = model_dir, RunState(model, checkpoints)
        else:
            save_dir = tempfile.mkdtemp(prefix="alexnet_worker_")
            atexit.register(shutil.rmtree, save_dir, ignore_errors=True)
            state = RunState(model, os.path.join(save_dir, run_dir.CHECKPOINT_DIR),
                             max_to_keep=1, restore_from=checkpoints)  # fmt: skip
    if towers:
        logging.info(strategies.describe_towers(model))
    new_layers = _start_from(model, config, record)
    if chief:
        resume.RunRecord(data_seed, computes_in, new_layers).write(model_dir)
    start = state.restore_latest()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker and strategies.chiefs_value(strategy, start) != start:
        raise ValueError(
            f"This worker resumed {model_dir} at step {start}, the chief at another step: "
            "--model_dir must be one directory that every worker reads (a shared filesystem)."
        )
    metric_values = [v.numpy() for v in state.metric_variables]
    train_step = model.train_step
    if datasets.uint8_pixels:
        train_step = device_input.finish_pixels_on_device(train_step)
    model.train_step = _counting_steps(train_step, state)
    steps_per_epoch = datasets.steps_per_epoch
    epoch, step_in_epoch = divmod(start, steps_per_epoch)
    if chief:
        resume.keep_history_before(os.path.join(model_dir, run_dir.HISTORY_FILE), epoch)
    lr_controller = cb.LearningRateController(
        config.learning_rate, config.lr_schedule, model_dir, patience=config.plateau_patience,
        max_drops=config.max_lr_drops, boundaries=config.lr_boundaries, write_state=chief,
    )  # fmt: skip
    step_checkpoint = cb.StepCheckpoint(
        state, config.checkpoint_every_steps, steps_per_epoch, start
    )
    callbacks = [lr_controller, cb.BadImageCounter(pipeline.bad_images()), cb.ValidationCount()]
    if step_in_epoch:  # Resumed midway: the epoch's metric sums so far.
        callbacks.append(cb.RestoredEpochMetrics(state.metric_variables, metric_values))
    callbacks.append(_async(keras.callbacks.ProgbarLogger()))
    if chief:
        callbacks += [
            keras.callbacks.CSVLogger(os.path.join(model_dir, run_dir.HISTORY_FILE), append=True),
            _async(keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"))),
            cb.FilterImageCallback(os.path.join(model_dir, "logs", "filters")),
        ]
    callbacks += [
        cb.ModelSaver(
            save_dir, completed_epochs=epoch, val_errors=lr_controller.errors, best_from=model_dir
        ),
        step_checkpoint,  # After everything an epoch end writes: a saved epoch is complete.
        *extra_callbacks,
    ]
    fit_args = dict(
        validation_data=datasets.validation,
        validation_steps=config.validation_steps,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
        shuffle=False,  # The input pipeline shuffles.
    )
    if multi_worker:
        strategies.prepare_multi_worker(model)
    scope = strategy.scope() if model._distribute_strategy is None else contextlib.nullcontext()
    with scope:
        last_logs = _fit(model, config, datasets, start, steps_per_epoch, fit_args, step_checkpoint)
    if step_checkpoint.failed_step is not None:
        raise FloatingPointError(
            f"The training loss became non-finite at step {step_checkpoint.failed_step}; the run "
            f"stopped. The last good checkpoint is {state.manager.latest_checkpoint}. Lower "
            "--learning_rate or check the data, then rerun the same command to resume from it."
        )
    if multi_worker:
        strategies.chiefs_value(strategy, 0)  # A barrier: the chief's model files are written.
    # Every worker evaluates the chief's files: a resumed run's other workers have not saved all.
    metrics = evaluation.final_metrics(
        model, config, datasets.evaluation, datasets.eval_split, model_dir, last_logs
    )
    if chief:
        evaluation.write_metrics(metrics, os.path.join(model_dir, run_dir.METRICS_FILE))
    logging.info("Final evaluation: %s", metrics)
    print(evaluation.describe(metrics))
    return metrics


def _async(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    """Marks a Keras callback whose batch-end work is display or summaries only as safe to run
    off the main thread, so fit need not wait for every step's logs (a host sync per step)."""
    callback.async_safe = True
    return callback


def _start_from(
    model: keras.Model, config: TrainConfig, record: resume.RunRecord | None
) -> tuple[str, ...]:
    """Loads --init_from's matching layers into a new run (a resumed one has its checkpoint) and
    slows their learning rate by --fine_tune_lr_factor; records the layers that start new."""
    if record is not None and record.new_layers is not None:
        new_layers = record.new_layers
    elif config.init_from:
        _, fresh = fine_tune.load_matching_layers(model, fine_tune.source_model(config.init_from))
        new_layers = tuple(fresh)
    else:
        new_layers = tuple(layer.name for layer in model.layers if layer.weights)
    if config.init_from:
        loaded = {layer.name for layer in model.layers if layer.weights} - set(new_layers)
        model.optimizer.scale_learning_rates(dict.fromkeys(loaded, config.fine_tune_lr_factor))
    return new_layers


def _write_run_files(
    config: TrainConfig, datasets: Datasets, data_stats: stats.DatasetStats
) -> None:
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, run_dir.CONFIG_FILE), "w") as f:
        f.write(config.to_json())
    with open(os.path.join(config.model_dir, run_dir.CLASS_NAMES_FILE), "w") as f:
        json.dump(list(datasets.class_names), f, indent=2)
    stats.save_stats(data_stats, os.path.join(config.model_dir, run_dir.STATS_FILE))


def _counting_steps(train_step: Callable[[object], dict], state: RunState) -> Callable:
    """The train step plus the run's own step counter and a note of the first non-finite loss.

    The optimizer's `iterations` does not advance on float16 steps the loss scale skips, so the
    run counts its steps itself (epochs, checkpoint names and input position follow it).
    """

    def counted(data: object) -> dict:
        logs = train_step(data)
        step = state.step.assign_add(1)
        bad = tf.logical_and(state.first_bad_step < 0, ~tf.math.is_finite(logs["loss"]))
        state.first_bad_step.assign(tf.where(bad, step, state.first_bad_step))
        return logs

    return counted


def _fit(
    model: keras.Model,
    config: TrainConfig,
    datasets: Datasets,
    start: int,
    steps_per_epoch: int,
    fit_args: dict,
    step_checkpoint: cb.StepCheckpoint,
) -> dict | None:
    """Runs the remaining epochs: an interrupted epoch first gets exactly its remaining steps.

    Each fit call reads the training stream from the step it starts at. Returns the last epoch's
    logs (None if there was nothing left to train).
    """
    epoch, step_in_epoch = divmod(start, steps_per_epoch)
    history_logs = None
    if step_in_epoch and epoch < config.epochs:
        done = model.fit(datasets.train_from(start), initial_epoch=epoch, epochs=epoch + 1,
                         steps_per_epoch=steps_per_epoch - step_in_epoch, **fit_args)  # fmt: skip
        history_logs = {k: v[-1] for k, v in done.history.items()}
        epoch += 1
    if epoch < config.epochs and step_checkpoint.failed_step is None:
        done = model.fit(datasets.train_from(epoch * steps_per_epoch), initial_epoch=epoch,
                         epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                         **fit_args)  # fmt: skip
        history_logs = {k: v[-1] for k, v in done.history.items()}
    return history_logs
