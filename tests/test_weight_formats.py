"""Readers of pretrained weight files: Caffe .caffemodel/.binaryproto and torch .pth/.safetensors.

Field numbers are proven against protobuf wire bytes encoded by hand here (tag = field << 3 |
wire type), independent of the module's message definitions.
"""

import struct
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from alexnet_keras.importers.caffe_format import (
    CaffeLayer,
    CaffeLRN,
    CaffeNet,
    caffemodel_bytes,
    mean_binaryproto_bytes,
    read_caffemodel,
    read_mean_file,
)
from alexnet_keras.importers.torch_format import read_state_dict

# --- Protobuf wire encoding, by hand -------------------------------------------------------------


def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def int_field(field, value):
    return varint(field << 3 | 0) + varint(value)


def len_field(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def str_field(field, text):
    return len_field(field, text.encode())


def float_field(field, value):
    return varint(field << 3 | 5) + struct.pack("<f", value)


def packed_floats(field, values):
    return len_field(field, struct.pack(f"<{len(values)}f", *values))


def packed_doubles(field, values):
    return len_field(field, struct.pack(f"<{len(values)}d", *values))


def packed_varints(field, values):
    return len_field(field, b"".join(varint(v) for v in values))


def legacy_blob(num, channels, height, width, values):
    """caffe.proto BlobProto: num = 1, channels = 2, height = 3, width = 4, data = 5 (packed)."""
    dims = int_field(1, num) + int_field(2, channels) + int_field(3, height) + int_field(4, width)
    return dims + packed_floats(5, values)


def shaped_blob(dims, values):
    """caffe.proto BlobProto.shape = 7 holding BlobShape.dim = 1 (packed int64), data = 5."""
    return len_field(7, packed_varints(1, dims)) + packed_floats(5, values)


def decode(data):
    """A protobuf message's (field number, value) pairs: ints for varints, bytes for the rest."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            assert wire in (1, 5), f"unexpected wire type {wire}"
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        fields.append((field, value))
    return fields


def read_varint(data, pos):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- Hand-encoded nets: the field numbers -------------------------------------------------------

FC_W = [0.5 * i for i in range(6)]
FC_B = [1.5, -2.0]


def hand_encoded_v1_net():
    """A V1 NetParameter (layers = 2) of V1LayerParameter: name = 4, type = 5, blobs = 6."""
    fc = (
        str_field(4, "fc")
        + int_field(5, 14)  # INNER_PRODUCT
        + str_field(2, "data")  # bottom: undeclared by the reader, must be skipped
        + len_field(6, legacy_blob(1, 1, 2, 3, FC_W))
        + len_field(6, legacy_blob(1, 1, 1, 2, FC_B))
        + float_field(7, 1.0)  # blobs_lr: skipped
        + len_field(17, int_field(1, 2))  # inner_product_param.num_output
    )
    conv = (
        str_field(4, "conv")
        + int_field(5, 4)  # CONVOLUTION
        + len_field(6, legacy_blob(2, 1, 1, 1, [3.0, -1.0]))
        # convolution_param: num_output = 1, bias_term = 2, kernel_size = 4, group = 5.
        + len_field(10, int_field(1, 2) + int_field(2, 0) + int_field(4, 1) + int_field(5, 2))
    )
    norm = (
        str_field(4, "norm")
        + int_field(5, 15)  # LRN
        # lrn_param: local_size = 1, alpha = 2, beta = 3, norm_region = 4, k = 5.
        + len_field(
            18,
            int_field(1, 3)
            + float_field(2, 0.5)
            + float_field(3, 0.25)
            + int_field(4, 1)
            + float_field(5, 2.0),
        )
    )
    relu = str_field(4, "relu") + int_field(5, 18)  # RELU
    net_input = str_field(3, "data") + int_field(4, 10)  # NetParameter input/input_dim: skipped
    return (
        str_field(1, "tiny")
        + net_input
        + b"".join(len_field(2, layer) for layer in (fc, conv, norm, relu))
    )


def hand_encoded_v2_net():
    """A V2 NetParameter (layer = 100) of LayerParameter: name = 1, type = 2, blobs = 7."""
    conv = (
        str_field(1, "conv1")
        + str_field(2, "Convolution")
        + str_field(3, "data")  # bottom: skipped
        + len_field(7, shaped_blob([2, 1, 1, 1], [0.25, -0.75]))
        + len_field(7, shaped_blob([2], [8.0, 9.0]))
        # convolution_param = 106: num_output = 1, pad = 3, kernel_size = 4, group = 5, stride = 6.
        + len_field(
            106,
            int_field(1, 2) + int_field(3, 1) + int_field(4, 1) + int_field(5, 2) + int_field(6, 1),
        )
    )
    norm = str_field(1, "norm1") + str_field(2, "LRN") + len_field(118, int_field(1, 7))
    # A weight in double_data = 8 and a bias written unpacked (one fixed32 per value).
    weight = len_field(7, packed_varints(1, [1, 3])) + packed_doubles(8, [0.25, 0.5, 0.75])
    bias = len_field(7, packed_varints(1, [1])) + float_field(5, 4.0)
    fc = (
        str_field(1, "fc")
        + str_field(2, "InnerProduct")
        + len_field(7, weight)
        + len_field(7, bias)
        + len_field(117, int_field(1, 1))  # inner_product_param.num_output
    )
    return str_field(1, "tiny2") + b"".join(len_field(100, layer) for layer in (conv, norm, fc))


def test_hand_encoded_v1_net(tmp_path):
    net = read_caffemodel(write(tmp_path, "v1.caffemodel", hand_encoded_v1_net()))
    assert (net.name, net.version) == ("tiny", "V1")
    assert [layer.type for layer in net.layers] == ["InnerProduct", "Convolution", "LRN", "ReLU"]
    fc, conv, norm, relu = net.layers
    assert fc.name == "fc" and fc.num_output == 2 and fc.group == 1
    np.testing.assert_array_equal(fc.blobs[0], np.array(FC_W, np.float32).reshape(2, 3))
    np.testing.assert_array_equal(fc.blobs[1], np.array(FC_B, np.float32))
    assert fc.blobs[0].dtype == np.float32
    assert (conv.group, conv.num_output, len(conv.blobs)) == (2, 2, 1)
    np.testing.assert_array_equal(conv.blobs[0], np.array([3.0, -1.0]).reshape(2, 1, 1, 1))
    assert norm.lrn == CaffeLRN(
        local_size=3, alpha=0.5, beta=0.25, k=2.0, norm_region="WITHIN_CHANNEL"
    )
    assert (relu.name, relu.blobs, relu.lrn, relu.num_output) == ("relu", (), None, None)
    assert set(net.by_name()) == {"fc", "conv", "norm", "relu"}


def test_hand_encoded_v2_net(tmp_path):
    net = read_caffemodel(write(tmp_path, "v2.caffemodel", hand_encoded_v2_net()))
    assert (net.name, net.version) == ("tiny2", "V2")
    layers = net.by_name()
    conv, norm, fc = layers["conv1"], layers["norm1"], layers["fc"]
    assert (conv.type, conv.group, conv.num_output) == ("Convolution", 2, 2)
    np.testing.assert_array_equal(conv.blobs[0], np.array([0.25, -0.75]).reshape(2, 1, 1, 1))
    np.testing.assert_array_equal(conv.blobs[1], [8.0, 9.0])
    assert norm.lrn == CaffeLRN(local_size=7, alpha=1.0, beta=0.75, k=1.0)  # Caffe's defaults
    assert (fc.type, fc.num_output) == ("InnerProduct", 1)
    np.testing.assert_array_equal(fc.blobs[0], [[0.25, 0.5, 0.75]])  # V2 shapes are kept as is
    assert fc.blobs[0].dtype == np.float32
    np.testing.assert_array_equal(fc.blobs[1], [4.0])


# --- Round trips of bvlc_alexnet-shaped nets ----------------------------------------------------

# bvlc_alexnet's deploy.prototxt: (name, type, weight shape or None, group); LRN 5, 1e-4, 0.75.
ALEXNET_LAYERS = [
    ("data", "Data", None, 1),
    ("conv1", "Convolution", (96, 3, 11, 11), 1),
    ("relu1", "ReLU", None, 1),
    ("norm1", "LRN", None, 1),
    ("pool1", "Pooling", None, 1),
    ("conv2", "Convolution", (256, 48, 5, 5), 2),
    ("relu2", "ReLU", None, 1),
    ("norm2", "LRN", None, 1),
    ("pool2", "Pooling", None, 1),
    ("conv3", "Convolution", (384, 256, 3, 3), 1),
    ("relu3", "ReLU", None, 1),
    ("conv4", "Convolution", (384, 192, 3, 3), 2),
    ("relu4", "ReLU", None, 1),
    ("conv5", "Convolution", (256, 192, 3, 3), 2),
    ("relu5", "ReLU", None, 1),
    ("pool5", "Pooling", None, 1),
    ("fc6", "InnerProduct", (4096, 9216), 1),
    ("relu6", "ReLU", None, 1),
    ("drop6", "Dropout", None, 1),
    ("fc7", "InnerProduct", (4096, 4096), 1),
    ("relu7", "ReLU", None, 1),
    ("drop7", "Dropout", None, 1),
    ("fc8", "InnerProduct", (1000, 4096), 1),
    ("prob", "Softmax", None, 1),
]
SMALL_FC = {"fc6": (64, 9216), "fc7": (64, 64), "fc8": (10, 64)}
ALEXNET_LRN = CaffeLRN(local_size=5, alpha=1e-4, beta=0.75, k=1.0)


def alexnet(seed, fc_shapes=None):
    rng = np.random.default_rng(seed)
    layers = []
    for name, layer_type, shape, group in ALEXNET_LAYERS:
        shape = (fc_shapes or {}).get(name, shape)
        blobs = (
            ()
            if shape is None
            else (rng.random(shape, np.float32), rng.random(shape[0], np.float32))
        )
        layers.append(
            CaffeLayer(
                name=name,
                type=layer_type,
                blobs=blobs,
                group=group,
                lrn=ALEXNET_LRN if layer_type == "LRN" else None,
                num_output=None if shape is None else shape[0],
            )
        )
    return CaffeNet(name="AlexNet", version="V1", layers=tuple(layers))


def assert_same_net(read, written, version):
    assert (read.name, read.version) == (written.name, version)
    assert [(x.name, x.type, x.group) for x in read.layers] == [
        (x.name, x.type, x.group) for x in written.layers
    ]
    for got, want in zip(read.layers, written.layers):
        assert (got.lrn, got.num_output) == (want.lrn, want.num_output), got.name
        assert len(got.blobs) == len(want.blobs), got.name
        for got_blob, want_blob in zip(got.blobs, want.blobs):
            assert got_blob.dtype == np.float32
            assert got_blob.shape == want_blob.shape, got.name
            assert got_blob.tobytes() == want_blob.tobytes(), got.name  # bit-identical


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_round_trip_alexnet_layers(tmp_path, version):
    net = alexnet(seed=1, fc_shapes=SMALL_FC)
    path = write(tmp_path, "alexnet.caffemodel", caffemodel_bytes(net, version))
    read = read_caffemodel(path)
    assert_same_net(read, net, version)
    layers = read.by_name()
    assert [layers[f"conv{i}"].group for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert layers["norm2"].lrn.alpha == 1e-4 and layers["norm2"].lrn.local_size == 5


def net_fields(data, version):
    """{layer name: [(blob field number, value), ...] per blob}, decoded from the wire."""
    layer_field, name_field, blob_field = (2, 4, 6) if version == "V1" else (100, 1, 7)
    layers = {}
    for field, layer in decode(data):
        if field == layer_field:
            fields = decode(layer)
            name = next(value.decode() for f, value in fields if f == name_field)
            layers[name] = [decode(value) for f, value in fields if f == blob_field]
    return layers


def test_v1_writer_stores_old_caffe_legacy_dims():
    """Old Caffe wrote 4-D num/channels/height/width: fc weights 1x1xoutxin, biases 1x1x1xout."""
    blobs = net_fields(caffemodel_bytes(alexnet(seed=2, fc_shapes=SMALL_FC), "V1"), "V1")
    dims = {
        name: [[v for f, v in blob if f in (1, 2, 3, 4)] for blob in b] for name, b in blobs.items()
    }
    assert dims["conv2"] == [[256, 48, 5, 5], [1, 1, 1, 256]]
    assert dims["fc6"] == [[1, 1, 64, 9216], [1, 1, 1, 64]]
    assert all(f != 7 for blob in blobs["fc6"] for f, _ in blob)  # no BlobShape


def test_v2_writer_stores_blob_shape():
    blobs = net_fields(caffemodel_bytes(alexnet(seed=2, fc_shapes=SMALL_FC), "V2"), "V2")
    for blob, dims in zip(blobs["fc6"], ([64, 9216], [64])):
        assert all(f not in (1, 2, 3, 4) for f, _ in blob)  # no legacy dims
        (shape,) = [decode(v) for f, v in blob if f == 7]
        assert [unpack_varints(v) for f, v in shape if f == 1] == [dims]


def unpack_varints(payload):
    values, pos = [], 0
    while pos < len(payload):
        value, pos = read_varint(payload, pos)
        values.append(value)
    return values


@pytest.mark.slow
def test_real_alexnet_shapes_round_trip(tmp_path):
    net = alexnet(seed=3)
    path = write(tmp_path, "bvlc_alexnet.caffemodel", caffemodel_bytes(net, "V1"))
    parameters = sum(blob.size for layer in net.layers for blob in layer.blobs)
    assert parameters == 60_965_224  # bvlc_alexnet's parameter count, grouped convs included
    assert 4 * parameters < path.stat().st_size < 4 * parameters + 10_000  # packed float32
    read = read_caffemodel(path)
    assert_same_net(read, net, "V1")
    shapes = {layer.name: layer.blobs[0].shape for layer in read.layers if layer.blobs}
    assert shapes["fc6"] == (4096, 9216) and shapes["conv4"] == (384, 192, 3, 3)


# --- Mean files ---------------------------------------------------------------------------------


def test_mean_binaryproto_round_trip(tmp_path):
    mean = np.random.default_rng(4).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    data = mean_binaryproto_bytes(mean)
    assert [v for f, v in decode(data) if f in (1, 2, 3, 4)] == [1, 3, 256, 256]
    read = read_mean_file(write(tmp_path, "ilsvrc_2012_mean.binaryproto", data))
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, mean)


@pytest.mark.parametrize(
    "blob",
    [legacy_blob(1, 3, 2, 2, list(range(12))), shaped_blob([1, 3, 2, 2], list(range(12)))],
    ids=["num-channels-height-width", "shape-dims"],
)
def test_hand_encoded_mean_is_channel_major(tmp_path, blob):
    mean = read_mean_file(write(tmp_path, "mean.binaryproto", blob))
    assert mean.shape == (3, 2, 2)
    assert mean[2, 1, 0] == 2 * 4 + 1 * 2 + 0  # row-major C x H x W: the R plane of BGR last
    np.testing.assert_array_equal(mean.ravel(), np.arange(12))


def test_mean_npy(tmp_path):
    mean = np.random.default_rng(5).uniform(0, 255, (3, 8, 8))  # float64, as Caffe's .npy
    np.save(tmp_path / "ilsvrc_2012_mean.npy", mean)
    read = read_mean_file(tmp_path / "ilsvrc_2012_mean.npy")
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, mean.astype(np.float32))


def test_mean_with_wrong_shape_names_it(tmp_path):
    np.save(tmp_path / "hwc.npy", np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"hwc\.npy is not a Caffe mean image.*\[8, 8, 3\]"):
        read_mean_file(tmp_path / "hwc.npy")
    path = write(tmp_path, "gray.binaryproto", legacy_blob(1, 1, 2, 2, [0.0] * 4))
    with pytest.raises(ValueError, match=r"gray\.binaryproto .*\[1, 2, 2\]"):
        read_mean_file(path)


@pytest.mark.parametrize(
    "data", [b"", np.random.default_rng(6).bytes(500)], ids=["empty", "random"]
)
def test_mean_not_a_blob(tmp_path, data):
    with pytest.raises(ValueError, match=r"bad\.binaryproto is not a Caffe mean file"):
        read_mean_file(write(tmp_path, "bad.binaryproto", data))


def test_mean_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.binaryproto"):
        read_mean_file(tmp_path / "nowhere.binaryproto")


# --- Bad caffemodels ----------------------------------------------------------------------------

JPEG = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00"
    + np.random.default_rng(7).bytes(300)
    + b"\xff\xd9"
)


def zip_pth(tmp_path):
    """A file laid out like torch.save's output: a zip holding archive/data.pkl."""
    path = tmp_path / "alexnet.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("random", "does not parse"),
        ("empty", "the file is empty"),
        ("jpeg", "a JPEG image"),
        ("pth", "a zip archive, such as a PyTorch .pth"),
        ("deploy", "no named layer with weight blobs"),
        ("mean", "no named layer with weight blobs"),
    ],
)
def test_not_a_caffemodel(tmp_path, kind, reason):
    data = {
        "random": lambda: np.random.default_rng(8).bytes(4096),
        "empty": lambda: b"",
        "jpeg": lambda: JPEG,
        "pth": lambda: zip_pth(tmp_path),
        "deploy": lambda: len_field(100, str_field(1, "relu1") + str_field(2, "ReLU")),
        "mean": lambda: legacy_blob(1, 3, 2, 2, [0.0] * 12),
    }[kind]()
    path = write(tmp_path, "bad.caffemodel", data)
    with pytest.raises(ValueError) as error:
        read_caffemodel(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a Caffe model: expected a binary NetParameter")
    assert reason in message


def test_blob_with_wrong_data_length_names_layer_and_sizes(tmp_path):
    layer = str_field(1, "fc6") + str_field(2, "InnerProduct")
    layer += len_field(7, shaped_blob([2, 3], [1.0] * 5))
    path = write(tmp_path, "short.caffemodel", len_field(100, layer))
    with pytest.raises(
        ValueError, match=r"short\.caffemodel: layer 'fc6'.*\[2, 3\] needs 6.*holds 5"
    ):
        read_caffemodel(path)


def test_v0_model_is_named(tmp_path):
    layer = len_field(1, str_field(1, "conv1")) + len_field(6, legacy_blob(1, 1, 1, 1, [1.0]))
    path = write(tmp_path, "v0.caffemodel", len_field(2, layer))
    with pytest.raises(ValueError, match=r"v0\.caffemodel is a V0 \(pre-2014\) Caffe model"):
        read_caffemodel(path)


def test_missing_caffemodel(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.caffemodel"):
        read_caffemodel(tmp_path / "nowhere.caffemodel")


# --- torch state_dicts --------------------------------------------------------------------------

# torchvision's alexnet parameter names, with small classifier shapes.
TORCHVISION_SHAPES = {
    "features.0.weight": (64, 3, 11, 11),
    "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5),
    "features.3.bias": (192,),
    "classifier.1.weight": (16, 9216),
    "classifier.1.bias": (16,),
    "classifier.6.weight": (10, 16),
    "classifier.6.bias": (10,),
}


def torchvision_arrays(seed):
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape, np.float32) for name, shape in TORCHVISION_SHAPES.items()
    }


def assert_same_arrays(read, arrays, ordered=True):
    assert (list(read) if ordered else sorted(read)) == (
        list(arrays) if ordered else sorted(arrays)
    )
    for name, array in arrays.items():
        assert read[name].dtype == np.float32, name
        np.testing.assert_array_equal(read[name], array)


def test_safetensors_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    arrays = torchvision_arrays(seed=9)
    save_file(arrays, tmp_path / "alexnet.safetensors")
    # safetensors sorts its header by name, so only torch files keep the saved order.
    assert_same_arrays(read_state_dict(tmp_path / "alexnet.safetensors"), arrays, ordered=False)


def test_safetensors_float16_becomes_float32(tmp_path):
    arrays = {"features.0.bias": np.array([0.5, -1.25], np.float16)}
    save_file(arrays, tmp_path / "half.safetensors")
    assert_same_arrays(read_state_dict(tmp_path / "half.safetensors"), arrays)


def test_not_safetensors(tmp_path):
    path = write(tmp_path, "bad.safetensors", np.random.default_rng(10).bytes(100))
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a readable safetensors file"):
        read_state_dict(path)


def test_unknown_extension_lists_accepted(tmp_path):
    path = write(tmp_path, "alexnet.h5", b"\x89HDF")
    with pytest.raises(ValueError, match=r"alexnet\.h5.*'\.h5'.*\.safetensors, \.pth, \.pt, \.bin"):
        read_state_dict(path)


def test_missing_state_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        read_state_dict(tmp_path / "nowhere.pth")


def test_pth_without_torch_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = write(tmp_path, "alexnet.pth", zip_pth(tmp_path))
    with pytest.raises(ImportError) as error:
        read_state_dict(path)
    assert str(error.value) == (
        f"Reading {path} needs PyTorch (a .pth is a torch pickle): pip install "
        "'alexnet_keras[torch]' (the CPU wheel is enough), or convert it to .safetensors, which "
        "needs no torch."
    )


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pth_state_dict_and_checkpoints(tmp_path, wrap):
    torch = pytest.importorskip("torch")
    arrays = torchvision_arrays(seed=11)
    state_dict = {name: torch.from_numpy(array.copy()) for name, array in arrays.items()}
    saved = state_dict if wrap is None else {wrap: state_dict, "epoch": 90, "best_top1": 0.57}
    torch.save(saved, tmp_path / "alexnet.pth")
    assert_same_arrays(read_state_dict(tmp_path / "alexnet.pth"), arrays)


def test_pth_half_and_grad_tensors_become_float32(tmp_path):
    torch = pytest.importorskip("torch")
    weight = torch.nn.Parameter(torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16))
    torch.save({"w": weight, "b": torch.tensor([0.25], dtype=torch.float16)}, tmp_path / "x.pt")
    assert_same_arrays(
        read_state_dict(tmp_path / "x.pt"), {"w": np.array([[1.5, -2.0]]), "b": np.array([0.25])}
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("random", "is not a PyTorch weights file"),
        ("empty", "is not a PyTorch weights file"),
        ("module", "a whole pickled nn.Module?"),
        ("list", "holds a list: expected a state_dict"),
        ("non_tensor", "expected names -> tensors, found 'lr': float"),
        ("no_tensors", "holds no tensors"),
    ],
)
def test_bad_pth(tmp_path, kind, message):
    torch = pytest.importorskip("torch")
    path = tmp_path / "bad.pth"
    if kind in ("random", "empty"):
        path.write_bytes(np.random.default_rng(12).bytes(300) if kind == "random" else b"")
    else:
        saved = {
            "module": torch.nn.Linear(2, 2),
            "list": [torch.zeros(2)],
            "non_tensor": {"features.0.weight": torch.zeros(2), "lr": 0.01},
            "no_tensors": {},
        }[kind]
        torch.save(saved, path)
    with pytest.raises(ValueError) as error:
        read_state_dict(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)
