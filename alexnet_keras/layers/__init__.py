"""AlexNet's non-standard layers: LRN, column-split (grouped) convolution and pooling, fc and
its dropout, plus torch's adaptive average pooling for torchvision's variant.

Each `call` is the reference computation in `keras.ops`, the same on every Keras backend: a
layer with `groups` columns computes them one by one (`column`) and concatenates them, as the
paper's two GPUs each held one column (Sec. 3.2). Where a column runs (`training/towers.py`) and
faster TensorFlow kernels for the same result (`alexnet_keras.kernels`) are decided outside.
"""

from alexnet_keras.layers.adaptive_pool import AdaptiveAveragePooling2D
from alexnet_keras.layers.dense import ColumnDropout, Dense, GroupedDense
from alexnet_keras.layers.grouped_conv import GroupedConv2D
from alexnet_keras.layers.grouped_pool import GroupedMaxPool2D
from alexnet_keras.layers.lrn import LocalResponseNormalization

__all__ = [
    "AdaptiveAveragePooling2D",
    "ColumnDropout",
    "Dense",
    "GroupedConv2D",
    "GroupedDense",
    "GroupedMaxPool2D",
    "LocalResponseNormalization",
]
