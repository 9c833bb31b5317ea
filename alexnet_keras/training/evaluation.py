"""Top-1/top-5 error of a model on a dataset, from one centre crop or the paper's 10 crops."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from alexnet_keras import keras_file, run_files
from alexnet_keras.config import TrainConfig


def crop_probabilities(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """Softmax of the logits; for [batch, 10, h, w, 3] the mean over the 10 crops (Sec. 4.1)."""
    if images.shape.rank == 5:
        crops = tf.shape(images)[1]
        flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], axis=0))
        probabilities = tf.nn.softmax(tf.cast(model(flat, training=False), tf.float32))
        return tf.reduce_mean(
            tf.reshape(probabilities, [-1, crops, tf.shape(probabilities)[-1]]), axis=1
        )
    return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))


def evaluate_model(
    model: keras.Model, dataset: tf.data.Dataset, split: str, steps: int | None = None
) -> dict:
    """Streams `dataset` of (images, labels) and returns the metrics.json dictionary."""

    @tf.function(reduce_retracing=True, autograph=False)
    def counts(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probabilities = crop_probabilities(model, images)
        labels = tf.cast(labels, tf.int32)
        k = min(5, probabilities.shape[-1])
        top1 = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probabilities, -1, tf.int32), labels), tf.int64)
        )
        top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probabilities, k), tf.int64))
        return top1, top5

    correct1 = correct5 = examples = 0
    crops = 1
    for step, (images, labels) in enumerate(dataset):
        if steps is not None and step >= steps:
            break
        crops = images.shape[1] if images.shape.rank == 5 else 1
        top1, top5 = counts(images, labels)
        correct1 += int(top1)
        correct5 += int(top5)
        examples += int(labels.shape[0])
    if not examples:
        raise ValueError(f"The {split!r} split gave no examples to evaluate.")
    top1_accuracy, top5_accuracy = correct1 / examples, correct5 / examples
    return {
        "top1_accuracy": top1_accuracy,
        "top5_accuracy": top5_accuracy,
        "top1_error": 1.0 - top1_accuracy,
        "top5_error": 1.0 - top5_accuracy,
        "examples": examples,
        "crops": crops,
        "split": split,
    }


def write_metrics(metrics: dict, path: str) -> None:
    """Writes the metrics atomically, so a reader never sees half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: (float(v) if isinstance(v, np.floating) else v) for k, v in metrics.items()},
                  f, indent=2, sort_keys=True)  # fmt: skip
    os.replace(tmp, path)


def describe(metrics: dict) -> str:
    """The metrics as one line for people (split, images, crops, top-1/top-5 error)."""
    crops = metrics["crops"]
    how = "centre crop" if crops == 1 else f"{crops} crops averaged"
    return (
        f"{metrics['split']} ({metrics['examples']:,} images, {how}): "
        f"top-1 error {metrics['top1_error']:.4f} (accuracy {metrics['top1_accuracy']:.4f}), "
        f"top-5 error {metrics['top5_error']:.4f} (accuracy {metrics['top5_accuracy']:.4f})"
    )


def final_metrics(
    model: keras.Model,
    config: TrainConfig,
    dataset: tf.data.Dataset,
    split: str,
    save_dir: str,
    logs: dict | None,
) -> dict:
    """The final evaluation; the last validation's numbers when it was the same computation
    (same split, one crop, the whole split, and the final model is the last validated one)."""
    best_is_last = config.final_checkpoint == "last" or _best_epoch(save_dir) == config.epochs
    if (
        logs
        and "val_examples" in logs
        and not config.ten_crop_eval
        and best_is_last
        and (config.validation_steps is None)
    ):
        top1, top5 = float(logs["val_top1"]), float(logs["val_top5"])
        metrics = {"top1_accuracy": top1, "top5_accuracy": top5, "top1_error": 1.0 - top1,
                   "top5_error": 1.0 - top5, "examples": int(logs["val_examples"]), "crops": 1,
                   "split": split}  # fmt: skip
    else:
        final = os.path.join(save_dir, run_files.MODEL_FILES[config.final_checkpoint])
        if os.path.exists(final):  # Into the network the run saved (a TrainingModel's).
            keras_file.load_weights(getattr(model, "network", model), final)
        metrics = evaluate_model(model, dataset, split)
    metrics["checkpoint"] = config.final_checkpoint
    return metrics


def _best_epoch(save_dir: str) -> int | None:
    path = os.path.join(save_dir, "best.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("epoch")
