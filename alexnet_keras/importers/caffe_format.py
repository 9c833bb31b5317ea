"""Reads Caffe's .caffemodel weights and mean .binaryproto files into NumPy, without caffe/protoc.

The messages come from `caffe_proto.py`; both the old V1 `layers` and the newer `layer` field
are read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError, Message

from alexnet_keras.importers.caffe_proto import (
    MESSAGES,
    NORM_REGION_NUMBERS,
    NORM_REGIONS,
    V1_LAYER_NUMBERS,
    V1_LAYER_TYPES,
)

_CONV_TYPES = ("Convolution", "Deconvolution")

# How many axes each weighted layer's blobs (weight, bias) really have. Legacy 4-D dims are
# aligned from the end (blob.cpp, Blob::ShapeEquals): an InnerProduct weight is 1 x 1 x out x in
# and a bias 1 x 1 x 1 x out, so the leading unit axes are dropped; other blobs stay 4-D.
_BLOB_AXES = {"Convolution": (4, 1), "Deconvolution": (4, 1), "InnerProduct": (2, 1)}

_NOT_A_MODEL = (
    "{path} is not a Caffe model: expected a binary NetParameter (.caffemodel) with named layers "
    "holding weight blobs, but {reason}"
)

_FILE_MAGICS = (
    (b"PK\x03\x04", "a zip archive, such as a PyTorch .pth (read it with torch_format instead)"),
    (b"\x80", "a Python pickle, such as an old PyTorch .pth (read it with torch_format instead)"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"\x93NUMPY", "a NumPy .npy file"),
)


@dataclass(frozen=True)
class CaffeLRN:
    """An LRN layer's settings, with caffe.proto's defaults.

    Caffe divides alpha by local_size (lrn_layer.cpp) and the paper does not: bvlc_alexnet's
    alpha = 1e-4 over 5 channels is the paper's alpha = 2e-5 (and its k is 1, not 2).
    """

    local_size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    k: float = 1.0
    norm_region: str = "ACROSS_CHANNELS"


# eq=False: the generated __eq__ would compare NumPy arrays, whose truth value is ambiguous.
@dataclass(frozen=True, eq=False)
class CaffeLayer:
    """One layer of a Caffe net with its weight blobs as float32 arrays in Caffe's layout.

    Conv weights are (out, in / group, kh, kw), InnerProduct weights (out, in), biases (out,).
    """

    name: str
    type: str
    blobs: tuple[np.ndarray, ...] = ()
    group: int = 1
    lrn: CaffeLRN | None = None
    num_output: int | None = None


@dataclass(frozen=True, eq=False)
class CaffeNet:
    """A Caffe net's layers in file order; version "V1" is the old `layers` field, "V2" `layer`."""

    name: str
    version: str
    layers: tuple[CaffeLayer, ...]

    def by_name(self) -> dict[str, CaffeLayer]:
        """The layers keyed by name (the last one wins if a name repeats)."""
        return {layer.name: layer for layer in self.layers}


def read_caffemodel(path: str | os.PathLike[str]) -> CaffeNet:
    """The layers and weights of a .caffemodel (V1 `layers` or V2 `layer`), e.g. bvlc_alexnet's."""
    data = _read_bytes(path)
    net = _parse(data, path)
    if net.layers and net.layer:
        raise ValueError(_not_a_model(path, data, "it holds both V1 `layers` and V2 `layer`"))
    if any(layer.HasField("layer") for layer in net.layers):
        raise ValueError(
            f"{path} is a V0 (pre-2014) Caffe model: expected a V1 or V2 NetParameter; upgrade it "
            "with Caffe's tools/upgrade_net_proto_binary"
        )
    version, messages = ("V1", net.layers) if net.layers else ("V2", net.layer)
    if not any(message.name and _has_data(message.blobs) for message in messages):
        raise ValueError(_not_a_model(path, data, "it has no named layer with weight blobs"))
    layers = tuple(_layer(message, version, path) for message in messages)
    return CaffeNet(name=net.name, version=version, layers=layers)


def read_mean_file(path: str | os.PathLike[str]) -> np.ndarray:
    """The float32 [3, H, W] BGR mean image of a mean .binaryproto (a BlobProto) or a .npy."""
    data = _read_bytes(path)
    if data.startswith(b"\x93NUMPY"):
        mean = _mean_from_npy(path)
    else:
        mean = _mean_from_blob(data, path)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3 or mean.shape[0] != 3:
        raise ValueError(
            f"{path} is not a Caffe mean image: expected [3, H, W] (BGR; a BlobProto of 1 x 3 x H "
            f"x W or a .npy), found shape {list(mean.shape)}"
        )
    return mean


def caffemodel_bytes(net: CaffeNet, version: str = "V1") -> bytes:
    """Serializes `net` the way Caffe wrote it: V1 with legacy 4-D blob dims, V2 with BlobShape."""
    if version not in ("V1", "V2"):
        raise ValueError(f"version must be 'V1' or 'V2', got {version!r}")
    message = MESSAGES["NetParameter"](name=net.name)
    for layer in net.layers:
        if version == "V1":
            _fill_layer(message.layers.add(), layer, _v1_type_number(layer.type), legacy=True)
        else:
            _fill_layer(message.layer.add(), layer, layer.type, legacy=False)
    return message.SerializeToString()


def mean_binaryproto_bytes(mean: np.ndarray) -> bytes:
    """Serializes a [3, H, W] mean as Caffe's compute_image_mean does: a 1 x 3 x H x W BlobProto."""
    blob = MESSAGES["BlobProto"]()
    _fill_blob(blob, np.asarray(mean)[np.newaxis], legacy=True)
    return blob.SerializeToString()


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (or is not a file)")
    with open(path, "rb") as file:
        return file.read()


def _parse(data: bytes, path: str | os.PathLike[str]) -> Message:
    if not data:
        raise ValueError(_not_a_model(path, data, "the file is empty"))
    try:
        return MESSAGES["NetParameter"].FromString(data)
    except DecodeError as error:
        raise ValueError(_not_a_model(path, data, f"it does not parse ({error})")) from error


def _not_a_model(path: str | os.PathLike[str], data: bytes, reason: str) -> str:
    """The error for a file that is no caffemodel, naming what it looks like when that is known."""
    kind = next((kind for magic, kind in _FILE_MAGICS if data.startswith(magic)), None)
    if kind:
        reason += f"; it looks like {kind}"
    return _NOT_A_MODEL.format(path=path, reason=reason)


def _has_data(blobs: Iterable[Message]) -> bool:
    return any(blob.data or blob.double_data for blob in blobs)


def _layer(message: Message, version: str, path: str | os.PathLike[str]) -> CaffeLayer:
    layer_type = _v1_type_name(message.type) if version == "V1" else message.type
    blobs = tuple(
        _blob_array(blob, _blob_shape(blob, layer_type, index), f"{path}: layer {message.name!r}")
        for index, blob in enumerate(message.blobs)
    )
    return CaffeLayer(
        name=message.name,
        type=layer_type,
        blobs=blobs,
        group=message.convolution_param.group,
        lrn=_lrn(message.lrn_param) if layer_type == "LRN" else None,
        num_output=_num_output(message),
    )


def _v1_type_name(number: int) -> str:
    return V1_LAYER_TYPES.get(number, f"V1LayerType{number}")


def _v1_type_number(layer_type: str) -> int:
    if layer_type not in V1_LAYER_NUMBERS:
        raise ValueError(f"layer type {layer_type!r} has no V1 enum value: write it as V2")
    return V1_LAYER_NUMBERS[layer_type]


def _num_output(message: Message) -> int | None:
    for param in ("convolution_param", "inner_product_param"):
        if message.HasField(param) and getattr(message, param).HasField("num_output"):
            return getattr(message, param).num_output
    return None


def _lrn(param: Message) -> CaffeLRN:
    return CaffeLRN(
        local_size=param.local_size,
        alpha=_decimal(param.alpha),
        beta=_decimal(param.beta),
        k=_decimal(param.k),
        norm_region=NORM_REGIONS.get(param.norm_region, str(param.norm_region)),
    )


def _decimal(value: float) -> float:
    """A float32 field as the decimal it was written as: 0.0001 rather than 9.9999997e-05."""
    return float(str(np.float32(value)))


def _blob_shape(blob: Message, layer_type: str, index: int) -> tuple[int, ...]:
    """The blob's shape; legacy num/channels/height/width win over `shape`, as in Caffe."""
    legacy = ("num", "channels", "height", "width")
    if not any(blob.HasField(field) for field in legacy):
        return tuple(blob.shape.dim)
    dims = tuple(getattr(blob, field) for field in legacy)
    axes = _BLOB_AXES.get(layer_type, ())
    kept = axes[index] if index < len(axes) else 4
    if any(dim != 1 for dim in dims[: 4 - kept]):
        return dims
    return dims[4 - kept :]


def _blob_array(blob: Message, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The blob's values (double_data if present, as Caffe prefers it) as float32 of `shape`."""
    values = np.array(blob.double_data if blob.double_data else blob.data, dtype=np.float32)
    expected = math.prod(shape)
    if values.size != expected:
        raise ValueError(
            f"{where}: a blob of shape {list(shape)} needs {expected} values, but it holds "
            f"{values.size}"
        )
    return values.reshape(shape)


def _mean_from_blob(data: bytes, path: str | os.PathLike[str]) -> np.ndarray:
    not_a_mean = f"{path} is not a Caffe mean file: expected a BlobProto (.binaryproto) or a .npy"
    try:
        blob = MESSAGES["BlobProto"].FromString(data)
    except DecodeError as error:
        raise ValueError(f"{not_a_mean} ({error})") from error
    if not _has_data([blob]):
        raise ValueError(f"{not_a_mean}, but it holds no values")
    return _blob_array(blob, _blob_shape(blob, "", 0), str(path))


def _mean_from_npy(path: str | os.PathLike[str]) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npy mean image ({error})") from error


def _fill_layer(message: Message, layer: CaffeLayer, layer_type: int | str, legacy: bool) -> None:
    message.name = layer.name
    message.type = layer_type
    for array in layer.blobs:
        _fill_blob(message.blobs.add(), array, legacy)
    if layer.type in _CONV_TYPES:
        message.convolution_param.group = layer.group
        if layer.num_output is not None:
            message.convolution_param.num_output = layer.num_output
    elif layer.type == "InnerProduct" and layer.num_output is not None:
        message.inner_product_param.num_output = layer.num_output
    if layer.lrn is not None:
        _fill_lrn(message.lrn_param, layer.lrn)


def _fill_lrn(param: Message, lrn: CaffeLRN) -> None:
    param.local_size = lrn.local_size
    param.alpha = lrn.alpha
    param.beta = lrn.beta
    param.k = lrn.k
    param.norm_region = NORM_REGION_NUMBERS[lrn.norm_region]


def _fill_blob(blob: Message, array: np.ndarray, legacy: bool) -> None:
    """Sets the blob's shape (legacy: 4-D, padded with leading 1s) and its float32 data."""
    if legacy:
        if array.ndim > 4:
            raise ValueError(f"a V1 blob has at most 4 dims, got shape {list(array.shape)}")
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    else:
        blob.shape.dim.extend(array.shape)
    payload = np.ascontiguousarray(array, dtype="<f4").tobytes()
    # Merging the packed field's wire bytes (tag: field number << 3 | 2, "length-delimited") is
    # ~50x faster than data.extend() for fc6's 38M floats.
    tag = blob.DESCRIPTOR.fields_by_name["data"].number << 3 | 2
    blob.MergeFromString(_varint(tag) + _varint(len(payload)) + payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
