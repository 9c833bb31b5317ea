"""What an importer hands the run writer: the network variant, Keras-layout weights, the input
statistics, and the conventions it folded in; plus the layout conversions both importers share.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alexnet_keras.data.stats import DatasetStats

# Both Caffe and torch flatten pool5 channels first: fc6's input index is c * 36 + h * 6 + w.
POOL5_CHANNELS = 256
POOL5_SIZE = 6


@dataclasses.dataclass(frozen=True, eq=False)
class ImportedNet:
    """Weights mapped onto `build_alexnet(architecture=..., lrn_form=..., groups=..., ...)`.

    Attributes:
        format: "caffe" or "torchvision".
        architecture, lrn_form, groups, use_lrn, image_size, resize_size: the run's config.
        layers: Keras layer name -> (kernel, bias) of the whole layer in Keras's layout: conv
            (kh, kw, in / groups, filters), fc (in, units), float32. The writer splits them by
            output channels into the layer's columns (`kernel_0`, `kernel_1`), which is exact for
            both conv1/conv3 (each column reads all input) and conv2/4/5 (column g = group g).
        num_classes: fc8's outputs.
        stats: what serving subtracts from RGB 0..255 pixels (stats.json).
        conventions: one line per convention mapped, for import.json and the console.
        details: source facts for import.json (e.g. Caffe's file version).
    """

    format: str
    architecture: str
    lrn_form: str
    groups: int
    use_lrn: bool
    image_size: int
    resize_size: int
    layers: dict[str, tuple[np.ndarray, np.ndarray]]
    num_classes: int
    stats: DatasetStats
    conventions: tuple[str, ...]
    details: dict


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """Caffe/torch (out, in / group, kh, kw) -> Keras/TF (kh, kw, in / group, out)."""
    return weight.transpose(2, 3, 1, 0)


def fc_kernel(weight: np.ndarray, channels_first_input: bool = False) -> np.ndarray:
    """Caffe/torch (out, in) -> Keras (in, out); with `channels_first_input` (fc6) the rows are
    reordered from the (c, h, w) flatten of pool5 to our channels-last (h, w, c) flatten."""
    if not channels_first_input:
        return weight.T
    out = weight.shape[0]
    maps = weight.reshape(out, POOL5_CHANNELS, POOL5_SIZE, POOL5_SIZE)
    return maps.transpose(2, 3, 1, 0).reshape(POOL5_SIZE * POOL5_SIZE * POOL5_CHANNELS, out)


def describe_shape(shape: tuple[int | None, ...]) -> str:
    """(96, 3, 11, 11) as "(96, 3, 11, 11)", an open dimension as "N"."""
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def shape_matches(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """Whether `shape` is `expected`, None in `expected` matching any size >= 2 (classes)."""
    return len(shape) == len(expected) and all(
        d >= 2 if e is None else d == e for d, e in zip(shape, expected)
    )
