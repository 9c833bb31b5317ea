"""alexnet_keras: AlexNet (Krizhevsky, Sutskever, Hinton, 2012) in TensorFlow/Keras 3."""

import os
import platform
import sys
import warnings

# oneDNN's CPU kernels, which TF turns on by itself only on x86 CPUs with AVX512-VNNI/BF16, AVX-VNNI
# or AMX: on an AVX2 AMD EPYC they train 1.5-1.8x faster than TF's own and run grouped
# convolutions as one op (BUILD_NOTES). Read when TensorFlow loads, so it must come first;
# TF_ENABLE_ONEDNN_OPTS=0 keeps TF's own kernels.
_ONEDNN_BY_DEFAULT = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
if (
    "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    and "tensorflow" in sys.modules
    and platform.machine().lower() in ("x86_64", "amd64")
):
    from alexnet_keras import cpu

    if not cpu.flags() & _ONEDNN_BY_DEFAULT:
        warnings.warn(
            "TensorFlow was imported before alexnet_keras, so oneDNN's CPU kernels are off in "
            "this process: TensorFlow turns them on by itself only on CPUs with AVX512-VNNI/BF16, "
            "AVX-VNNI or AMX, and without them training ran 1.5-1.8x slower on AVX2 AMD EPYCs. "
            "Import alexnet_keras before tensorflow, or set TF_ENABLE_ONEDNN_OPTS=1 (0 to keep "
            "TF's own kernels quietly).",
            RuntimeWarning,
            stacklevel=2,
        )
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.2.0"
