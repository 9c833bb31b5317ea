"""The few caffe.proto messages a .caffemodel needs, declared in code (no protoc, no caffe).

Field numbers and types are those of BVLC/caffe's src/caffe/proto/caffe.proto (master, commit
9b89154); protobuf skips every undeclared field, so the rest of a real model is ignored.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR_TYPES = {
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "uint32": _F.TYPE_UINT32,
    "int64": _F.TYPE_INT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "string": _F.TYPE_STRING,
}

# One row per field as caffe.proto declares it: (name, number, label, type[, default]); label
# "packed" is `repeated ... [packed = true]`. Enums are declared int32, the same varint on the
# wire, so a value missing from the tables below still reaches us instead of being dropped.
_SCHEMA: dict[str, tuple[tuple, ...]] = {
    # caffe.proto `message BlobShape`: repeated int64 dim = 1 [packed].
    "BlobShape": (("dim", 1, "packed", "int64"),),
    # caffe.proto `message BlobProto`: num = 1, channels = 2, height = 3, width = 4 (the legacy
    # 4-D shape), data = 5 [packed], diff = 6 [packed], shape = 7, double_data = 8 [packed].
    "BlobProto": (
        ("num", 1, "optional", "int32"),
        ("channels", 2, "optional", "int32"),
        ("height", 3, "optional", "int32"),
        ("width", 4, "optional", "int32"),
        ("data", 5, "packed", "float"),
        ("diff", 6, "packed", "float"),
        ("shape", 7, "optional", "BlobShape"),
        ("double_data", 8, "packed", "double"),
    ),
    # caffe.proto `message ConvolutionParameter`: num_output = 1, bias_term = 2 [default true],
    # pad = 3, kernel_size = 4, group = 5 [default 1], stride = 6. pad/kernel_size/stride are
    # `repeated` since N-d convolution; the 2014 proto's `optional` has the same wire encoding.
    "ConvolutionParameter": (
        ("num_output", 1, "optional", "uint32"),
        ("bias_term", 2, "optional", "bool", "true"),
        ("pad", 3, "repeated", "uint32"),
        ("kernel_size", 4, "repeated", "uint32"),
        ("group", 5, "optional", "uint32", "1"),
        ("stride", 6, "repeated", "uint32"),
    ),
    # caffe.proto `message InnerProductParameter`: num_output = 1.
    "InnerProductParameter": (("num_output", 1, "optional", "uint32"),),
    # caffe.proto `message LRNParameter`: local_size = 1 [default 5], alpha = 2 [default 1],
    # beta = 3 [default 0.75], norm_region = 4 (enum NormRegion), k = 5 [default 1].
    "LRNParameter": (
        ("local_size", 1, "optional", "uint32", "5"),
        ("alpha", 2, "optional", "float", "1"),
        ("beta", 3, "optional", "float", "0.75"),
        ("norm_region", 4, "optional", "int32"),
        ("k", 5, "optional", "float", "1"),
    ),
    # caffe.proto `message LayerParameter` (V2): name = 1, type = 2, blobs = 7,
    # convolution_param = 106, inner_product_param = 117, lrn_param = 118.
    "LayerParameter": (
        ("name", 1, "optional", "string"),
        ("type", 2, "optional", "string"),
        ("blobs", 7, "repeated", "BlobProto"),
        ("convolution_param", 106, "optional", "ConvolutionParameter"),
        ("inner_product_param", 117, "optional", "InnerProductParameter"),
        ("lrn_param", 118, "optional", "LRNParameter"),
    ),
    # caffe.proto `message V0LayerParameter`: name = 1; only there to recognise pre-2014 files.
    "V0LayerParameter": (("name", 1, "optional", "string"),),
    # caffe.proto `message V1LayerParameter`: layer = 1 (V0), name = 4, type = 5 (enum
    # LayerType), blobs = 6, convolution_param = 10, inner_product_param = 17, lrn_param = 18.
    "V1LayerParameter": (
        ("layer", 1, "optional", "V0LayerParameter"),
        ("name", 4, "optional", "string"),
        ("type", 5, "optional", "int32"),
        ("blobs", 6, "repeated", "BlobProto"),
        ("convolution_param", 10, "optional", "ConvolutionParameter"),
        ("inner_product_param", 17, "optional", "InnerProductParameter"),
        ("lrn_param", 18, "optional", "LRNParameter"),
    ),
    # caffe.proto `message NetParameter`: name = 1, layers = 2 (V1), layer = 100 (V2).
    "NetParameter": (
        ("name", 1, "optional", "string"),
        ("layers", 2, "repeated", "V1LayerParameter"),
        ("layer", 100, "repeated", "LayerParameter"),
    ),
}

# caffe.proto `enum V1LayerParameter.LayerType` numbers -> the V2 type strings Caffe upgrades them
# to (src/caffe/util/upgrade_proto.cpp, UpgradeV1LayerType).
V1_LAYER_TYPES = {
    0: "",
    1: "Accuracy",
    2: "BNLL",
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    7: "EuclideanLoss",
    8: "Flatten",
    9: "HDF5Data",
    10: "HDF5Output",
    11: "Im2col",
    12: "ImageData",
    13: "InfogainLoss",
    14: "InnerProduct",
    15: "LRN",
    16: "MultinomialLogisticLoss",
    17: "Pooling",
    18: "ReLU",
    19: "Sigmoid",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    23: "TanH",
    24: "WindowData",
    25: "Eltwise",
    26: "Power",
    27: "SigmoidCrossEntropyLoss",
    28: "HingeLoss",
    29: "MemoryData",
    30: "ArgMax",
    31: "Threshold",
    32: "DummyData",
    33: "Slice",
    34: "MVN",
    35: "AbsVal",
    36: "Silence",
    37: "ContrastiveLoss",
    38: "Exp",
    39: "Deconvolution",
}
V1_LAYER_NUMBERS = {name: number for number, name in V1_LAYER_TYPES.items()}

# caffe.proto `enum LRNParameter.NormRegion`.
NORM_REGIONS = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}
NORM_REGION_NUMBERS = {name: number for number, name in NORM_REGIONS.items()}


def _field_proto(name: str, number: int, label: str, type_name: str, default: str = "") -> _F:
    field = _F(name=name, number=number)
    field.label = _F.LABEL_OPTIONAL if label == "optional" else _F.LABEL_REPEATED
    if type_name in _SCALAR_TYPES:
        field.type = _SCALAR_TYPES[type_name]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".caffe.{type_name}"
    if label == "packed":
        field.options.packed = True
    if default:
        field.default_value = default
    return field


def _build_messages() -> dict[str, type[Message]]:
    """The message classes of _SCHEMA, in a private pool so a real caffe_pb2 cannot clash."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="alexnet_keras_caffe.proto", package="caffe", syntax="proto2"
    )
    for message_name, fields in _SCHEMA.items():
        message = file_proto.message_type.add(name=message_name)
        message.field.extend(_field_proto(*field) for field in fields)
    classes = message_factory.GetMessages([file_proto], pool=descriptor_pool.DescriptorPool())
    return {full_name.removeprefix("caffe."): cls for full_name, cls in classes.items()}


MESSAGES = _build_messages()
