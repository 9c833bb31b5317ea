"""What the host CPU offers, from /proc/cpuinfo: the facts precision and kernel choices rest on."""

from __future__ import annotations

import functools
import re


@functools.cache
def _info() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # Not Linux: no flags, so every CPU-specific path stays off.
        return ""


def flags() -> frozenset[str]:
    """The first CPU's feature flags (`avx2`, `avx512f`, `amx_bf16`, ...); empty if unknown."""
    found = re.search(r"^flags\s*:(.*)$", _info(), re.MULTILINE)
    return frozenset(found.group(1).split()) if found else frozenset()


def name() -> str:
    """The CPU's model name, or "unknown"."""
    found = re.search(r"^model name\s*:\s*(.*)$", _info(), re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def has_native_bfloat16() -> bool:
    """Whether the CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX)."""
    return bool(flags() & {"avx512_bf16", "amx_bf16"})


def is_avx2_only() -> bool:
    """Whether the widest vector unit is AVX2 (no AVX512): oneDNN then runs its AVX2 kernels."""
    return "avx2" in flags() and "avx512f" not in flags()


@functools.cache
def runs_avx2_kernels() -> bool:
    """Whether ops run on an AVX2-only CPU with no GPU: the case oneDNN's AVX2 kernels decide."""
    import tensorflow as tf  # Not at the top: `alexnet_keras` sets TF's options before it loads.

    return is_avx2_only() and not tf.config.list_physical_devices("GPU")
