"""The CPU facts read from /proc/cpuinfo: on made-up files (passed in) and on this machine's."""

import pytest

from alexnet_keras import cpu

_ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx fma avx2 bmi2 second_cpu_only
"""


@pytest.mark.parametrize(
    ("flags", "native_bf16", "avx2_only"),
    [("avx avx2 fma", False, True), ("avx2 avx512f avx512_bf16", True, False),
     ("avx2 avx512f amx_bf16", True, False), ("avx avx512f", False, False), ("sse2", False, False)],
)  # fmt: skip
def test_flags_decide_bfloat16_and_avx2(flags, native_bf16, avx2_only):
    text = _ZEN2.replace("fpu sse2 avx fma avx2 bmi2\n", flags + "\n", 1)
    assert cpu.flags(text) == frozenset(flags.split())  # The first CPU's.
    assert cpu.has_native_bfloat16(cpu.flags(text)) == native_bf16
    assert cpu.is_avx2_only(cpu.flags(text)) == avx2_only
    assert cpu.name(text) == "AMD EPYC 7B12"


def test_flag_sets_are_taken_as_they_are():
    assert cpu.has_native_bfloat16(frozenset({"amx_bf16"}))
    assert not cpu.has_native_bfloat16(frozenset())
    assert cpu.is_avx2_only(frozenset({"avx2"}))
    assert not cpu.is_avx2_only(frozenset({"avx2", "avx512f"}))


def test_no_cpuinfo_means_no_flags():
    assert cpu.flags("") == frozenset() and cpu.name("") == "unknown"
    assert cpu.flags("processor\t: 0\nmodel name\t: Some ARM\n") == frozenset()
    assert not cpu.has_native_bfloat16(cpu.flags("")) and not cpu.is_avx2_only(cpu.flags(""))


def test_without_arguments_this_machines_cpuinfo_is_read(monkeypatch):
    monkeypatch.setattr(cpu, "_info", lambda: _ZEN2)
    assert cpu.flags() == cpu.flags(_ZEN2) and cpu.name() == "AMD EPYC 7B12"
    assert cpu.is_avx2_only() and not cpu.has_native_bfloat16()


def test_this_machine_has_flags():
    """Every machine these tests run on is a Linux x86 one: its flags parse to a real set."""
    assert "sse2" in cpu.flags()
    assert cpu.flags() == cpu.flags(cpu._info())
