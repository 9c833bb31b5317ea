"""alexnet_keras: AlexNet (Krizhevsky, Sutskever, Hinton, 2012) in TensorFlow/Keras 3."""

import os

# oneDNN's CPU kernels, which TF turns on by itself only on CPUs with AVX512-VNNI/BF16 or AMX: on
# an AVX2 AMD EPYC they train 1.8x faster than TF's own and run grouped convolutions as one op
# (BUILD_NOTES, "CPUs without AVX512"). Read when TensorFlow loads, so it must come first;
# TF_ENABLE_ONEDNN_OPTS=0 keeps TF's own kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
