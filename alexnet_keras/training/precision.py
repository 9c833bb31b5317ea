"""The compute precision of a run: `--mixed_precision=auto|none|float16|bfloat16`."""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from alexnet_keras import cpu


def gpus_have_bfloat16(gpus: list) -> bool:
    """Whether every GPU has bfloat16 tensor cores (compute capability 8.0, Ampere, or newer)."""
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    return bool(gpus) and all(d.get("compute_capability", (0, 0)) >= (8, 0) for d in details)


def resolve_precision(mixed_precision: str) -> str:
    """`auto`: bfloat16 where the hardware has native bf16 units, else the paper's float32.

    Native bf16 means AVX512-BF16 or AMX on a CPU (1.6-2x faster training here) and tensor cores
    of compute capability >= 8.0 on GPUs (~2x and more). Weights, the optimizer's update, LRN and
    the logits stay float32 either way; float16 is a flag away.
    """
    if mixed_precision != "auto":
        return mixed_precision
    gpus = tf.config.list_physical_devices("GPU")
    native = gpus_have_bfloat16(gpus) if gpus else cpu.has_native_bfloat16()
    return "bfloat16" if native else "none"


# TF's CPU kernels sum float16 in float16 (GPUs accumulate in float32): a bias gradient, summed
# over the batch and every position, stops growing at 2048 times its terms.
FLOAT16_ON_CPU = (
    "Warning: --mixed_precision=float16 with no GPU: TF's CPU kernels sum float16 in float16 "
    "(4,096 ones sum to 2,048), so bias gradients come out short. float16 is for GPUs; on a "
    "CPU use --mixed_precision=bfloat16 or none."
)


def set_precision(mixed_precision: str) -> None:
    """Keras's global policy for `--mixed_precision`; float16 without a GPU says what it costs."""
    policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    resolved = resolve_precision(mixed_precision)
    logging.info("--mixed_precision=%s: computing in %s.", mixed_precision, policy[resolved])
    if resolved == "float16" and not tf.config.list_physical_devices("GPU"):
        print(FLOAT16_ON_CPU)
        logging.warning(FLOAT16_ON_CPU)
    keras.mixed_precision.set_global_policy(policy[resolved])
