"""The training run: `run(config, strategy=None, datasets=None)`, the paper's recipe (Sec. 5).

Tests inject a strategy (e.g. two logical CPUs) and tiny datasets; the command line
(`alexnet_keras.train`) passes neither and gets the configured strategy and input pipeline.
Rerunning the same command resumes the run exactly where its last checkpoint left it (see
`checkpoints.py` for what is saved and `resume.py` for what may change).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import logging

from alexnet_keras import kernels, run_files
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import pipeline, stats
from alexnet_keras.model import build_alexnet
from alexnet_keras.training import callbacks as cb
from alexnet_keras.training import (
    evaluation,
    fine_tune,
    precision,
    resume,
    strategies,
    towers,
)
from alexnet_keras.training.checkpoints import RunState
from alexnet_keras.training.datasets import Datasets, make_datasets
from alexnet_keras.training.optimizer import PaperSGD
from alexnet_keras.training.training_model import TrainingModel

INITIAL_LOSS_SCALE = 2.0**15  # float16's dynamic loss scale starts here (Keras's default).


def compile_alexnet(
    config: TrainConfig,
    num_classes: int,
    strategy: tf.distribute.Strategy,
    tower_devices: tuple[str, ...] | None = None,
    kernel_policy: kernels.KernelPolicy | None = None,
    uint8_pixels: bool = False,
) -> TrainingModel:
    """The training model, optimizer, loss and metrics, their variables in `strategy`'s scope.

    Shared with tools/benchmark.py, so the benchmark times exactly the step that training runs.
    `kernel_policy` (None: the reference layers) is not used by towers, which run each column's
    reference `column` on its device. Under MultiWorkerMirroredStrategy the `TrainingModel`
    around the network (it holds no variables) is made outside the scope, so fit takes the
    strategy from the scope it runs in: Keras 3.15 would otherwise reduce the first input batch
    with strategy.reduce(), which that strategy cannot do for per-replica inputs.
    """
    with strategy.scope():
        if tower_devices:
            with towers.variables_on(tower_devices):
                network = build_alexnet(num_classes=num_classes, **config.model_kwargs())
        else:
            network = build_alexnet(
                num_classes=num_classes, kernel_policy=kernel_policy, **config.model_kwargs()
            )
    fine_tune.check_freeze(config.freeze, network)
    for name in config.freeze:  # Before compiling: frozen layers get no gradient nor momentum.
        network.get_layer(name).trainable = False
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with contextlib.nullcontext() if multi_worker else strategy.scope():
        model = TrainingModel(network, tower_devices, uint8_pixels, vector_logs=multi_worker)
    with strategy.scope():
        _compile(model, config, num_classes, strategy.num_replicas_in_sync, tower_devices)
    return model


def _compile(
    model: TrainingModel,
    config: TrainConfig,
    num_classes: int,
    replicas: int,
    tower_devices: tuple[str, ...] | None,
) -> None:
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
        jit_compile=config.jit_compile and replicas == 1 and tower_devices is None,
        steps_per_execution=config.steps_per_execution,
    )
    optimizer.build(model.trainable_variables)
    # Build the metrics (their variables, which checkpoints hold) and the loss now. Keras would
    # at the first fit by running the model on a stream's batch, which a uint8 stream's is not.
    labels, logits = tf.zeros([1], tf.int32), tf.zeros([1, num_classes])
    model.compute_metrics(None, labels, logits, None)
    model.compute_loss(y=labels, y_pred=logits)
    model.reset_metrics()


def run(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    datasets: Datasets | None = None,
    allow_changes: Sequence[str] = (),
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains (or resumes) per `config`, evaluates, writes metrics.json and returns the metrics.

    `allow_changes` names the recorded settings a resumed run may change (see `resume.py`);
    `callbacks` run after the run's own. The mixed-precision policy the run sets is restored
    afterwards, so a run leaves no global state behind in the calling process.
    """
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _run(config, strategy, datasets, tuple(allow_changes), list(callbacks))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


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
    if record is not None and record.init_from_settings is not None:
        inherited = record.init_from_settings
    elif config.init_from:  # Before any work: copied weights keep their function, or no run.
        inherited = fine_tune.check_settings(config)
    else:
        inherited = None
    data_seed = record.data_seed if record else config.seed or pipeline.random_seed()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        data_seed = strategies.chiefs_value(strategy, data_seed)  # One order for all workers.
    precision.set_precision(config.mixed_precision)
    kernel_policy = None if towers else resolve_kernels(config)
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

    model = compile_alexnet(
        config, len(datasets.class_names), strategy, towers, kernel_policy, datasets.uint8_pixels
    )
    with strategy.scope():
        # Under multi-worker training every worker saves (saving is collective), the non-chief
        # ones into a throwaway directory; all resume from the chief's checkpoints.
        checkpoints = os.path.join(model_dir, run_files.CHECKPOINT_DIR)
        if chief:
            save_dir, state = model_dir, RunState(model, checkpoints)
        else:
            save_dir = tempfile.mkdtemp(prefix="alexnet_worker_")
            atexit.register(shutil.rmtree, save_dir, ignore_errors=True)
            state = RunState(model, os.path.join(save_dir, run_files.CHECKPOINT_DIR),
                             max_to_keep=1, restore_from=checkpoints)  # fmt: skip
    if towers:
        logging.info(strategies.describe_towers(model))
    new_layers = _start_from(model, config, record)
    if chief:
        resume.RunRecord(data_seed, computes_in, new_layers, inherited).write(model_dir)
    start = state.restore_latest()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker and strategies.chiefs_value(strategy, start) != start:
        raise ValueError(
            f"This worker resumed {model_dir} at step {start}, the chief at another step: "
            "--model_dir must be one directory that every worker reads (a shared filesystem)."
        )
    metric_sums = state.metric_sums()  # Before fit resets them.
    model.after_step = state.count_step
    steps_per_epoch = datasets.steps_per_epoch
    epoch, step_in_epoch = divmod(start, steps_per_epoch)
    if chief:
        resume.keep_history_before(os.path.join(model_dir, run_files.HISTORY_FILE), epoch)
    lr_controller = cb.LearningRateController(
        config.learning_rate, config.lr_schedule, model_dir, patience=config.plateau_patience,
        max_drops=config.max_lr_drops, boundaries=config.lr_boundaries, write_state=chief,
    )  # fmt: skip
    step_checkpoint = cb.StepCheckpoint(
        state, config.checkpoint_every_steps, steps_per_epoch, start
    )
    callbacks = [lr_controller, cb.BadImageCounter(pipeline.bad_images()), cb.ValidationCount()]
    if step_in_epoch:  # Resumed midway: the epoch's metric sums so far.
        callbacks.append(cb.RestoredEpochMetrics(metric_sums))
    callbacks.append(_async(keras.callbacks.ProgbarLogger()))
    if chief:
        callbacks += [
            keras.callbacks.CSVLogger(os.path.join(model_dir, run_files.HISTORY_FILE), append=True),
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
    with strategy.scope():
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
        evaluation.write_metrics(metrics, os.path.join(model_dir, run_files.METRICS_FILE))
    logging.info("Final evaluation: %s", metrics)
    print(evaluation.describe(metrics))
    return metrics


def _async(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    """Marks a Keras callback whose batch-end work is display or summaries only as safe to run
    off the main thread, so fit need not wait for every step's logs (a host sync per step)."""
    callback.async_safe = True
    return callback


def _start_from(
    model: TrainingModel, config: TrainConfig, record: resume.RunRecord | None
) -> tuple[str, ...]:
    """Loads --init_from's matching layers into a new run (a resumed one has its checkpoint) and
    slows their learning rate by --fine_tune_lr_factor; records the layers that start new."""
    if record is not None and record.new_layers is not None:
        new_layers = record.new_layers
    elif config.init_from:
        source = fine_tune.source_model(config.init_from)
        _, fresh = fine_tune.load_matching_layers(model.network, source)
        new_layers = tuple(fresh)
    else:
        new_layers = tuple(layer.name for layer in model.network.layers if layer.weights)
    if config.init_from:
        loaded = {layer.name for layer in model.network.layers if layer.weights} - set(new_layers)
        model.optimizer.scale_learning_rates(dict.fromkeys(loaded, config.fine_tune_lr_factor))
    return new_layers


def _write_run_files(
    config: TrainConfig, datasets: Datasets, data_stats: stats.DatasetStats
) -> None:
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, run_files.CONFIG_FILE), "w") as f:
        f.write(config.to_json())
    with open(os.path.join(config.model_dir, run_files.CLASS_NAMES_FILE), "w") as f:
        json.dump(list(datasets.class_names), f, indent=2)
    stats.save_stats(data_stats, os.path.join(config.model_dir, run_files.STATS_FILE))


def resolve_kernels(config: TrainConfig) -> kernels.KernelPolicy:
    """--kernels for this host and precision, decided once, before anything is traced."""
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    policy = kernels.resolve(config.kernels, compute_dtype)
    message = f"--kernels={config.kernels}: {policy.describe()} ({compute_dtype})."
    logging.info(message)
    print(message)
    return policy


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
