"""alexnet_keras: AlexNet (Krizhevsky, Sutskever, Hinton, 2012) in TensorFlow/Keras 3."""

import os
import sys
import warnings

# oneDNN's CPU kernels, which TF turns on by itself only on CPUs with AVX512-VNNI/BF16 or AMX: on
# an AVX2 AMD EPYC they train 1.5-1.8x faster than TF's own and run grouped convolutions as one op
# (BUILD_NOTES, "CPUs without AVX512"). Read when TensorFlow loads, so it must come first;
# TF_ENABLE_ONEDNN_OPTS=0 keeps TF's own kernels.
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and "tensorflow" in sys.modules:
    from tensorflow.python.util import _pywrap_util_port

    if not _pywrap_util_port.IsMklEnabled():
        warnings.warn(
            "TensorFlow was imported before alexnet_keras, so oneDNN's CPU kernels are off in "
            "this process: TensorFlow turns them on by itself only on CPUs with AVX512-VNNI/BF16 "
            "or AMX, and without them training ran 1.5-1.8x slower on AVX2 AMD EPYCs. Import "
            "alexnet_keras before tensorflow, or set TF_ENABLE_ONEDNN_OPTS=1 (0 to keep TF's "
            "own kernels quietly).",
            RuntimeWarning,
            stacklevel=2,
        )
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
