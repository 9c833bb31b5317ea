"""The training run: `run(config, strategy=None, datasets=None)`, the paper's recipe (Sec. 5).

Tests inject a strategy (e.g. two logical CPUs) and tiny datasets; the command line
(`alexnet_keras.train`) passes neither and gets the configured strategy and input pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from alexnet_keras import run_dir
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import pipeline, sources, stats
from alexnet_keras.model import build_alexnet
from alexnet_keras.training import callbacks as cb
from alexnet_keras.training import evaluation, precision, strategies
from alexnet_keras.training.optimizer import PaperSGD


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What a run trains and evaluates on. `train` repeats; the others are one pass.

    Each is a `tf.data.Dataset` of global batches or a `tf.distribute` distributed dataset;
    `evaluation` yields 10-crop batches [batch, 10, size, size, 3] when the run asks for them.
    """

    train: tf.data.Dataset | tf.distribute.DistributedDataset
    validation: tf.data.Dataset
    evaluation: tf.data.Dataset
    class_names: tuple[str, ...]
    steps_per_epoch: int
    eval_split: str


def make_datasets(
    config: TrainConfig, strategy: tf.distribute.Strategy, data_stats: stats.DatasetStats
) -> Datasets:
    """The configured source through the shared input pipeline, sharded per worker/replica."""
    try:
        info = sources.dataset_info(config.dataset, config.data_dir, config.manual_dir)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"--dataset={config.dataset}: {error}") from error
    common = dict(
        image_size=config.image_size,
        resize_size=config.resize_size,
        stats=data_stats,
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
        seed=config.seed,
        deterministic=config.deterministic,
        strict=config.strict_data,
    )

    def train_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.build_dataset(
            config.dataset, info.train_split, training=True, repeat=True, input_context=context,
            batch_size=context.get_per_replica_batch_size(config.batch_size),
            augment=config.augment, lighting_std=config.lighting_std, **common,
        )  # fmt: skip

    def eval_dataset(ten_crop: bool) -> tf.data.Dataset:
        return pipeline.build_dataset(
            config.dataset, info.eval_split, training=False, batch_size=config.batch_size,
            ten_crop=ten_crop, **common,
        )  # fmt: skip

    if strategy.num_replicas_in_sync > 1 or config.distribution == "multi_worker":
        train = strategy.distribute_datasets_from_function(train_fn)
    else:
        train = train_fn(tf.distribute.InputContext())
    return Datasets(
        train=train,
        validation=eval_dataset(False),
        evaluation=eval_dataset(config.ten_crop_eval),
        class_names=info.class_names,
        steps_per_epoch=config.steps_per_epoch
        or math.ceil(info.num_train_examples / config.batch_size),
        eval_split=info.eval_split,
    )


def _write_json(path: str, value: object) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def compile_alexnet(
    config: TrainConfig, num_classes: int, towers: tuple[str, ...] | None, replicas: int
) -> keras.Model:
    """The training model, optimizer, loss and metrics; call inside the strategy's scope.

    Shared with tools/benchmark.py, so the benchmark times exactly the step that training runs.
    """
    model = build_alexnet(num_classes=num_classes, tower_devices=towers, **config.model_kwargs())
    optimizer = PaperSGD(config.learning_rate, config.momentum, config.weight_decay)
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
    )
    optimizer.build(model.trainable_variables)
    return model


def run(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    datasets: Datasets | None = None,
) -> dict:
    """Trains (or resumes) per `config`, evaluates, writes metrics.json and returns the metrics.

    The mixed-precision policy the run sets is restored afterwards, so a run leaves no global
    state behind in the calling process.
    """
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _run(config, strategy, datasets)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None,
    datasets: Datasets | None,
) -> dict:
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF work.
    if strategy is None:
        strategy, towers = strategies.make_strategy(config.distribution, config.devices)
    else:
        towers = tuple(config.devices) if config.distribution == "towers" else None
    precision.set_precision(config.mixed_precision)
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
    chief = strategies.is_chief(strategy)
    data_stats = stats.load_stats(config.stats_file)
    datasets = datasets or make_datasets(config, strategy, data_stats)

    model_dir = config.model_dir
    os.makedirs(model_dir, exist_ok=True)
    if chief:
        with open(os.path.join(model_dir, run_dir.CONFIG_FILE), "w") as f:
            f.write(config.to_json())
        _write_json(os.path.join(model_dir, run_dir.CLASS_NAMES_FILE), list(datasets.class_names))
        stats.save_stats(data_stats, os.path.join(model_dir, run_dir.STATS_FILE))

    with strategy.scope():
        model = compile_alexnet(config, len(datasets.class_names), towers, replicas)
        optimizer = model.optimizer
    if towers:
        logging.info(strategies.describe_towers(model))

    # Under multi-worker training every worker saves (saving is collective), the non-chief ones
    # into a throwaway directory.
    save_dir = model_dir if chief else tempfile.mkdtemp(prefix="alexnet_worker_")
    checkpoint_dir = os.path.join(save_dir, run_dir.CHECKPOINT_DIR)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("Resumed from %s at step %d.", manager.latest_checkpoint,
                     int(optimizer.iterations.numpy()))  # fmt: skip

    steps_per_epoch = datasets.steps_per_epoch
    epoch, step_in_epoch = divmod(int(optimizer.iterations.numpy()), steps_per_epoch)
    step_checkpoint = cb.StepCheckpoint(manager, config.checkpoint_every_steps)
    callbacks = [
        cb.LearningRateController(
            config.learning_rate, config.lr_schedule, model_dir, patience=config.plateau_patience,
            max_drops=config.max_lr_drops, boundaries=config.lr_boundaries, write_state=chief,
        ),
        step_checkpoint,
        cb.ModelSaver(save_dir),
        cb.BadImageCounter(pipeline.bad_images()),
    ]  # fmt: skip
    if chief:
        callbacks += [
            keras.callbacks.CSVLogger(os.path.join(model_dir, run_dir.HISTORY_FILE), append=True),
            keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), update_freq="epoch"),
            cb.FilterImageCallback(os.path.join(model_dir, "logs", "filters")),
        ]
    fit_args = dict(
        x=datasets.train,
        validation_data=datasets.validation,
        validation_steps=config.validation_steps,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
        shuffle=False,  # The input pipeline shuffles.
    )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras 3.15 reduces the first input batch with strategy.reduce() before training,
        # which MultiWorkerMirroredStrategy cannot do for per-replica inputs. Without a stored
        # strategy Keras skips that step and takes the strategy from the scope fit runs in.
        model._distribute_strategy = None
        # And it averages each step's scalar logs with strategy.reduce(axis=0), which needs a
        # vector (tensorflow/tensorflow#72388): hand it one-element vectors.
        model.train_step = _vector_logs(model.train_step)
        model.test_step = _vector_logs(model.test_step)
    scope = strategy.scope() if model._distribute_strategy is None else contextlib.nullcontext()
    with scope:
        _fit(model, config, epoch, step_in_epoch, steps_per_epoch, fit_args, step_checkpoint)
    if step_checkpoint.failed_step is not None:
        raise FloatingPointError(
            f"The training loss became {step_checkpoint.failed_loss} at step "
            f"{step_checkpoint.failed_step}; the run stopped. The last good checkpoint is "
            f"{manager.latest_checkpoint}. Lower --learning_rate or check the data, then rerun "
            "the same command to resume from it."
        )

    final = os.path.join(model_dir, run_dir.MODEL_FILES[config.final_checkpoint])
    if os.path.exists(final):
        model.load_weights(final)
    metrics = evaluation.evaluate_model(model, datasets.evaluation, datasets.eval_split)
    metrics["checkpoint"] = config.final_checkpoint
    if chief:
        evaluation.write_metrics(metrics, os.path.join(model_dir, run_dir.METRICS_FILE))
    else:
        shutil.rmtree(save_dir, ignore_errors=True)
    logging.info("Final evaluation: %s", metrics)
    print(evaluation.describe(metrics))
    return metrics


def _vector_logs(step: Callable[[object], dict]) -> Callable[[object], dict]:
    def step_with_vector_logs(data: object) -> dict:
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return step_with_vector_logs


def _fit(
    model: keras.Model,
    config: TrainConfig,
    epoch: int,
    step_in_epoch: int,
    steps_per_epoch: int,
    fit_args: dict,
    step_checkpoint: cb.StepCheckpoint,
) -> None:
    """Runs the remaining epochs; an interrupted epoch first gets exactly its remaining steps."""
    if step_in_epoch and epoch < config.epochs:
        model.fit(initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=steps_per_epoch - step_in_epoch, **fit_args)  # fmt: skip
        epoch += 1
    if epoch < config.epochs and step_checkpoint.failed_step is None:
        model.fit(initial_epoch=epoch, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                  **fit_args)  # fmt: skip
