"""Strategy factory for --distribution: one device, mirrored, the paper's towers, multi-worker."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

import keras
import tensorflow as tf
from absl import logging


def split_logical_devices(count: int, gpu_memory_mb: int = 4096) -> None:
    """Splits the first GPU (or, without one, the CPU) into `count` logical devices.

    Lets a one-GPU (or GPU-less) machine run the two-device code paths for real. Must run
    before TensorFlow initializes its devices, i.e. before any op executes.
    """
    gpus = tf.config.list_physical_devices("GPU")
    device = gpus[0] if gpus else tf.config.list_physical_devices("CPU")[0]
    limit = {"memory_limit": gpu_memory_mb} if gpus else {}
    configs = [tf.config.LogicalDeviceConfiguration(**limit) for _ in range(count)]
    try:
        tf.config.set_logical_device_configuration(device, configs)
    except RuntimeError as error:  # Already initialized: fine if the split is already there.
        kind = "GPU" if gpus else "CPU"
        if len(tf.config.list_logical_devices(kind)) < count:
            raise RuntimeError(
                f"--logical_devices={count}: TensorFlow was initialized before the split ({error})."
            ) from error


def default_devices(count: int | None = None) -> tuple[str, ...]:
    """All GPUs if there are any, else all logical CPUs (at most `count`)."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    names = tuple(d.name for d in devices)
    return names[:count] if count else names


def _check_devices_exist(devices: tuple[str, ...]) -> None:
    known = [d.name for d in tf.config.list_logical_devices()]
    for device in devices:
        spec = tf.DeviceSpec.from_string(device)
        if not any(
            (tf.DeviceSpec.from_string(k).device_type or "").upper()
            == (spec.device_type or "").upper()
            and tf.DeviceSpec.from_string(k).device_index == spec.device_index
            for k in known
        ):
            raise ValueError(
                f"--devices: {device} does not exist. Available: {', '.join(known)} "
                "(use --logical_devices=2 to split one device into two)."
            )


def make_strategy(
    distribution: str, devices: tuple[str, ...] = ()
) -> tuple[tf.distribute.Strategy, tuple[str, ...] | None]:
    """Returns (strategy, tower_devices); tower_devices is set only for the paper's towers."""
    if distribution == "multi_worker":  # First: listing devices would initialize TF too early.
        return tf.distribute.MultiWorkerMirroredStrategy(), None
    if devices:
        _check_devices_exist(devices)
    gpus = tf.config.list_logical_devices("GPU")
    if distribution == "auto":
        distribution = "mirrored" if len(gpus) >= 2 else "one_device"
        logging.info("--distribution=auto chose %s (%d GPUs visible).", distribution, len(gpus))
    if distribution == "one_device":
        device = devices[0] if devices else (gpus[0].name if gpus else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device), None
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices or default_devices())), None
    if distribution == "towers":
        towers = devices or default_devices(2)
        if len(towers) != 2:
            raise ValueError(
                f"--distribution=towers needs two devices; found {', '.join(towers) or 'none'}. "
                "Pass --devices=/gpu:0,/gpu:1, or --logical_devices=2 to split one device."
            )
        # One replica; the model pins each column to its device (Sec. 3.2).
        return tf.distribute.get_strategy(), tuple(towers)
    raise ValueError(
        f"--distribution={distribution} is not one of auto, one_device, mirrored, "
        "towers, multi_worker."
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker writes the run's files (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0)


def chiefs_value(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's `value` on every worker (e.g. a data seed drawn at random on each)."""
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(value if context.replica_id_in_sync_group == 0 else 0, tf.int64)
    )
    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None))


def bytes_per_device(variables: Iterable[keras.Variable]) -> dict[str, int]:
    """Bytes of `variables` on each device they live on, e.g. {"GPU:0": ..., "GPU:1": ...}."""
    totals = collections.Counter()
    for variable in variables:
        spec = tf.DeviceSpec.from_string(variable.value.device)
        size = math.prod(variable.shape) * tf.as_dtype(variable.dtype).size
        totals[f"{spec.device_type}:{spec.device_index}"] += size
    return dict(sorted(totals.items()))


def describe_towers(model: keras.Model) -> str:
    """Where the towers put the weights and momentum: near half on each device (Sec. 3.2)."""
    weights = bytes_per_device(model.trainable_variables)
    state = bytes_per_device(model.optimizer.variables)
    parts = [
        f"{device} {weights.get(device, 0) / 1e6:.1f} MB of weights + "
        f"{state.get(device, 0) / 1e6:.1f} MB of optimizer state"
        for device in sorted(set(weights) | set(state))
    ]
    return "Towers: " + "; ".join(parts) + "."
