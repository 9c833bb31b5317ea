"""The CPU facts read from /proc/cpuinfo, on a made-up file and on this machine's."""

import pytest

from alexnet_keras import cpu

_ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx fma avx2 bmi2
"""


@pytest.mark.parametrize(
    ("flags", "native_bf16", "avx2_only"),
    [("avx avx2 fma", False, True), ("avx2 avx512f avx512_bf16", True, False),
     ("avx2 avx512f amx_bf16", True, False), ("avx avx512f", False, False), ("sse2", False, False)],
)  # fmt: skip
def test_flags_decide_bfloat16_and_avx2(monkeypatch, flags, native_bf16, avx2_only):
    monkeypatch.setattr(cpu, "_info", lambda: _ZEN2.replace("fpu sse2 avx fma avx2 bmi2", flags))
    assert cpu.flags() == frozenset(flags.split())
    assert cpu.has_native_bfloat16() == native_bf16
    assert cpu.is_avx2_only() == avx2_only
    assert cpu.name() == "AMD EPYC 7B12"


def test_no_cpuinfo_means_no_cpu_specific_path(monkeypatch):
    monkeypatch.setattr(cpu, "_info", lambda: "")
    assert cpu.flags() == frozenset() and cpu.name() == "unknown"
    assert not cpu.has_native_bfloat16() and not cpu.is_avx2_only()


def test_this_machine_has_flags():
    """Every machine these tests run on is a Linux x86 one: its flags parse to a real set."""
    assert "sse2" in cpu.flags()
