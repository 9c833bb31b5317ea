"""The compute precision of a run: `--mixed_precision=auto|none|float16|bfloat16`."""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging


def cpu_has_native_bfloat16() -> bool:
    """Whether this x86 CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(mixed_precision: str) -> str:
    """`auto`: bfloat16 when training on a CPU with native bf16 (~2x faster there), else float32.

    On GPUs `auto` keeps the paper's float32; float16 is a flag away.
    """
    if mixed_precision != "auto":
        return mixed_precision
    if not tf.config.list_physical_devices("GPU") and cpu_has_native_bfloat16():
        return "bfloat16"
    return "none"


def set_precision(mixed_precision: str) -> None:
    policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    resolved = resolve_precision(mixed_precision)
    logging.info("--mixed_precision=%s: computing in %s.", mixed_precision, policy[resolved])
    keras.mixed_precision.set_global_policy(policy[resolved])
