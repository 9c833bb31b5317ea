"""AlexNet's non-standard layers: LRN, column-split (grouped) convolution and pooling, and fc,
plus torch's adaptive average pooling for torchvision's variant.

Each optionally splits its work into `groups` columns pinned to `devices`, which is how the
paper's two GPUs each hold one column of the network (Sec. 3.2).
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
