"""What the host CPU offers, from /proc/cpuinfo: the facts precision and kernel choices rest on.

Each function reads this machine's /proc/cpuinfo, or the text (or flags) it is given, so the
rules built on them can be tested with any CPU's description.
"""

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


def flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The first CPU's feature flags (`avx2`, `avx512f`, `amx_bf16`, ...); empty if unknown."""
    found = re.search(r"^flags\s*:(.*)$", _info() if cpuinfo is None else cpuinfo, re.MULTILINE)
    return frozenset(found.group(1).split()) if found else frozenset()


def name(cpuinfo: str | None = None) -> str:
    """The CPU's model name, or "unknown"."""
    text = _info() if cpuinfo is None else cpuinfo
    found = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def describe() -> str:
    """The CPU's model name and the vector units the kernel choices rest on: what every figure
    (benchmark, test run) names its machine by."""
    units = sorted(flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    return f"{name()} ({', '.join(units) or 'no AVX2'})"


def has_native_bfloat16(cpu_flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX)."""
    return bool((flags() if cpu_flags is None else cpu_flags) & {"avx512_bf16", "amx_bf16"})


def is_avx2_only(cpu_flags: frozenset[str] | None = None) -> bool:
    """Whether the widest vector unit is AVX2 (no AVX512): oneDNN then runs its AVX2 kernels."""
    cpu_flags = flags() if cpu_flags is None else cpu_flags
    return "avx2" in cpu_flags and "avx512f" not in cpu_flags
