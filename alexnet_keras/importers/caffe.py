"""Caffe's bvlc_alexnet (.caffemodel, V1 or V2) mapped onto `build_alexnet(lrn_form="caffe")`.

bvlc_alexnet is the paper's two-column net trained with Caffe's LRN on one GPU, fed BGR pixels on
the 0..255 scale minus the ilsvrc_2012 mean, 227x227 crops. The mapping is exact:
- conv kernels (out, in / group, kh, kw) -> (kh, kw, in / group, out), split by output filters
  into our two columns: conv2/4/5 (Caffe group 2) column g = Caffe group g; conv1/conv3 (Caffe
  group 1) read their whole input in both columns, so splitting their filters changes nothing;
- conv1's input-channel axis is reversed, so the served network takes RGB (BGR folded in);
- fc weights (out, in) -> (in, out), fc6's rows permuted from Caffe's channels-first flatten of
  pool5 to our channels-last one;
- the mean goes to stats.json in RGB order (per channel, or the whole mean image with a mean file).
Caffe's max pooling rounds its output size up, ours down; at 227 input every pool's (size - 3) is
even (55, 27, 13), so both give 27, 13 and 6.
"""

from __future__ import annotations

import os

import numpy as np

from alexnet_keras import constants
from alexnet_keras.data import stats as stats_lib
from alexnet_keras.importers import caffe_format, imported
from alexnet_keras.importers.caffe_format import CaffeLayer, CaffeLRN, CaffeNet

# bvlc_alexnet's deploy.prototxt: weighted layers as (name, type, weight shape, group); fc8 may
# have any number of classes (a fine-tuned net).
BVLC_ALEXNET = (
    ("conv1", "Convolution", (96, 3, 11, 11), 1),
    ("conv2", "Convolution", (256, 48, 5, 5), 2),
    ("conv3", "Convolution", (384, 256, 3, 3), 1),
    ("conv4", "Convolution", (384, 192, 3, 3), 2),
    ("conv5", "Convolution", (256, 192, 3, 3), 2),
    ("fc6", "InnerProduct", (4096, 9216), 1),
    ("fc7", "InnerProduct", (4096, 4096), 1),
    ("fc8", "InnerProduct", (None, 4096), 1),
)
BVLC_LRN = CaffeLRN(
    local_size=constants.CAFFE_LRN_LOCAL_SIZE,
    alpha=constants.CAFFE_LRN_ALPHA,
    beta=constants.CAFFE_LRN_BETA,
    k=constants.CAFFE_LRN_K,
)
_WEIGHTED_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def load(path: str, mean_file: str | None = None) -> imported.ImportedNet:
    """Reads and validates a bvlc_alexnet-shaped .caffemodel (and mean file) into an ImportedNet.

    Raises:
        ValueError: naming the file, the layer and the expected and found shapes (or settings).
        FileNotFoundError: for a missing weights or mean file.
    """
    net = caffe_format.read_caffemodel(path)
    layers = _check_layers(net, path)
    weights = {}
    for name, layer in layers.items():
        weight, bias = (np.asarray(blob, np.float32) for blob in layer.blobs)
        if name.startswith("conv"):
            kernel = imported.conv_kernel(weight)
            if name == "conv1":  # Caffe's input channel 0 is blue, ours red.
                kernel = kernel[:, :, ::-1, :]
        else:
            kernel = imported.fc_kernel(weight, channels_first_input=name == "fc6")
        weights[name] = (np.ascontiguousarray(kernel), bias)
    data_stats, mean_details = _stats(mean_file)
    num_classes = int(layers["fc8"].blobs[0].shape[0])
    return imported.ImportedNet(
        format="caffe",
        architecture="paper",
        lrn_form="caffe",
        groups=2,
        use_lrn=True,
        image_size=constants.IMAGE_SIZE,
        resize_size=constants.RESIZE_SIZE,
        layers=weights,
        num_classes=num_classes,
        stats=data_stats,
        conventions=(
            "BGR input: conv1's input-channel axis reversed, so the network takes RGB",
            f"mean subtraction on the 0..255 scale: {mean_details}",
            "LRN: Caffe's (k=1, alpha=1e-4 / local_size 5, beta=0.75) across both columns",
            "conv kernels (out, in/group, kh, kw) -> (kh, kw, in/group, out), split by filters "
            "into two columns (Caffe group g = column g for conv2, conv4, conv5)",
            "fc6 rows: Caffe's channels-first flatten of pool5 (c, h, w) -> channels-last",
            "fc weights (out, in) -> (in, out), split by output units into two columns",
            f"input {constants.IMAGE_SIZE}x{constants.IMAGE_SIZE} crops of {constants.RESIZE_SIZE}"
            " (Caffe squashed images to 256x256; serving rescales the shorter side)",
        ),
        details={
            "caffe_net_name": net.name,
            "caffe_file_version": net.version,
            "fc8_layer": layers["fc8"].name,
            "mean": mean_details,
            "mean_file": None if mean_file is None else os.path.abspath(mean_file),
        },
    )


def _check_layers(net: CaffeNet, path: str) -> dict[str, CaffeLayer]:
    """bvlc_alexnet's weighted layers by our names, or a ValueError naming what differs."""
    _check_lrn(net, path)
    by_name = net.by_name()
    expected_names = {name for name, *_ in BVLC_ALEXNET}
    extra = [
        layer
        for layer in net.layers
        if layer.type in _WEIGHTED_TYPES and layer.blobs and layer.name not in expected_names
    ]
    # Caffe's fine-tuning recipe renames fc8 (e.g. fc8_flickr) so that it is trained anew.
    if "fc8" not in by_name and len(extra) == 1 and extra[0].type == "InnerProduct":
        by_name["fc8"], extra = extra[0], []
    if extra:
        names = ", ".join(f"{layer.name!r} ({layer.type})" for layer in extra)
        raise ValueError(f"{path} is not bvlc_alexnet: it has weighted layers it lacks: {names}")
    layers = {}
    for name, layer_type, shape, group in BVLC_ALEXNET:
        kind = f"{layer_type} (group {group})" if layer_type == "Convolution" else layer_type
        expected = f"{kind} with weights {imported.describe_shape(shape)}"
        layer = by_name.get(name)
        if layer is None:
            raise ValueError(
                f"{path} is not bvlc_alexnet: it has no layer {name!r}: expected {expected}"
            )
        where = f"{path}: layer {name!r}" + (f" ({layer.name!r})" if layer.name != name else "")
        found = [tuple(blob.shape) for blob in layer.blobs]
        if (
            layer.type != layer_type
            or len(found) != 2
            or not imported.shape_matches(found[0], shape)
            or found[1] != found[0][:1]
        ):
            shapes = " and ".join(imported.describe_shape(s) for s in found) or "no blobs"
            raise ValueError(
                f"{where} does not match bvlc_alexnet: expected {expected} and bias "
                f"{imported.describe_shape(shape[:1])}, found {layer.type} with {shapes}"
            )
        if layer_type == "Convolution" and layer.group != group:
            raise ValueError(
                f"{where} does not match bvlc_alexnet: expected group {group}, found {layer.group}"
            )
        layers[name] = layer
    return layers


def _check_lrn(net: CaffeNet, path: str) -> None:
    """bvlc_alexnet normalizes before pooling with Caffe's LRN; CaffeNet (bvlc_reference_caffenet),
    whose weights have the same shapes, pools first: a different network, refused."""
    order = [layer.name for layer in net.layers]
    for i in (1, 2):
        norm, pool = f"norm{i}", f"pool{i}"
        if norm in order and pool in order and order.index(pool) < order.index(norm):
            raise ValueError(
                f"{path} is not bvlc_alexnet: {pool!r} comes before {norm!r}, as in CaffeNet "
                "(bvlc_reference_caffenet), which pools before LRN; bvlc_alexnet normalizes first"
            )
    for layer in net.layers:
        if layer.type == "LRN" and layer.lrn != BVLC_LRN:
            raise ValueError(
                f"{path}: layer {layer.name!r} does not match bvlc_alexnet: expected {BVLC_LRN}, "
                f"found {layer.lrn}"
            )


def _stats(mean_file: str | None) -> tuple[stats_lib.DatasetStats, str]:
    """Caffe's BGR mean as RGB statistics (PCA: the ImageNet defaults), and a description."""
    imagenet = stats_lib.IMAGENET
    if mean_file is None:
        mean_rgb = tuple(reversed(constants.CAFFE_MEAN_BGR))
        details = f"ilsvrc_2012_mean per channel, BGR {constants.CAFFE_MEAN_BGR} -> RGB"
        mean_image = None
    else:
        mean_bgr = caffe_format.read_mean_file(mean_file).astype(np.float64)  # [3, H, W]
        image = mean_bgr[::-1].transpose(1, 2, 0)  # [H, W, 3] RGB
        mean_rgb = tuple(float(v) for v in image.mean(axis=(0, 1)))
        height, width = image.shape[:2]
        details = (
            f"mean image {os.path.basename(mean_file)} ({height}x{width}, BGR -> RGB), resized to "
            f"{constants.RESIZE_SIZE}x{constants.RESIZE_SIZE}; its window under the crop"
        )
        mean_image = tuple(tuple(tuple(pixel) for pixel in row) for row in image.tolist())
    data_stats = stats_lib.DatasetStats(
        mean_rgb=mean_rgb,
        eigval=imagenet.eigval,
        eigvec=imagenet.eigvec,
        mean_image=mean_image,
        source=f"Caffe bvlc_alexnet: {details}; PCA: {imagenet.source}",
    )
    return data_stats, details
