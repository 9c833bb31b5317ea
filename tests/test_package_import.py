"""Importing the package: oneDNN on where TF leaves it off, or a warning when too late."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_IMPORT = """
import sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    if sys.argv[1] == "tf_first":
        import tensorflow
    import alexnet_keras
    import tensorflow
from tensorflow.python.util import _pywrap_util_port
print(_pywrap_util_port.IsMklEnabled(), sum("oneDNN" in str(w.message) for w in caught))
"""


def _run(order: str, **env: str) -> tuple[bool, int]:
    """(oneDNN on, oneDNN warnings) in a fresh process importing in `order`."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _IMPORT, order], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    onednn, warned = done.stdout.split()
    return onednn == "True", int(warned)


@pytest.mark.slow
@pytest.mark.skipif(not os.uname().machine.startswith("x86"), reason="oneDNN's default is x86's")
def test_import_turns_onednn_on_or_says_why_not():
    """Imported first, the package turns oneDNN on, silently. Imported after TensorFlow, it is
    too late (TF reads the variable as it loads): a warning says so exactly where oneDNN is off,
    and an explicit TF_ENABLE_ONEDNN_OPTS is the user's choice, never warned about."""
    assert _run("ours_first") == (True, 0)
    onednn, warned = _run("tf_first")
    assert warned == (0 if onednn else 1)
    assert _run("tf_first", TF_ENABLE_ONEDNN_OPTS="0") == (False, 0)


@pytest.mark.parametrize(
    "flags, warned",
    [("avx2 fma", True), ("avx2 avx512f avx512_vnni", False), ("avx2 amx_bf16 amx_tile", False)],
)
def test_the_warning_follows_tfs_onednn_default_on_any_cpu(monkeypatch, flags, warned):
    """The package's rule, on fake CPUs: TensorFlow already imported and TF_ENABLE_ONEDNN_OPTS
    unset, it warns exactly where TF leaves oneDNN off by default (no VNNI, BF16 or AMX)."""
    import importlib
    import platform
    import warnings

    import alexnet_keras
    from alexnet_keras import cpu

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "_info", lambda: f"flags\t\t: fpu sse2 avx {flags}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(alexnet_keras)
    assert any("oneDNN" in str(w.message) for w in caught) == warned
