"""The two published variants: Caffe's bvlc_alexnet (lrn_form="caffe") and torchvision's alexnet()
(architecture="torchvision"): parameter counts, shapes, Caffe's LRN, and the config's checks."""

import keras
import numpy as np
import pytest

from alexnet_keras import constants
from alexnet_keras.config import TrainConfig
from alexnet_keras.layers import LocalResponseNormalization
from alexnet_keras.model import TORCHVISION_LAYER_NAMES, build_alexnet

TORCHVISION = dict(architecture="torchvision", groups=1, use_lrn=False)


@pytest.fixture(scope="module")
def torchvision_model():
    return build_alexnet(seed=0, **TORCHVISION)


def test_torchvision_parameter_count(torchvision_model):
    assert torchvision_model.count_params() == 61_100_840 == constants.TORCHVISION_NUM_PARAMETERS
    expected = {  # torchvision/models/alexnet.py, layer by layer.
        "conv1": 11 * 11 * 3 * 64 + 64,
        "conv2": 5 * 5 * 64 * 192 + 192,
        "conv3": 3 * 3 * 192 * 384 + 384,
        "conv4": 3 * 3 * 384 * 256 + 256,
        "conv5": 3 * 3 * 256 * 256 + 256,
        "fc6": 256 * 6 * 6 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096,
        "fc8": 4096 * 1000 + 1000,
    }
    for name, count in expected.items():
        assert torchvision_model.get_layer(name).count_params() == count, name


def test_torchvision_shapes_and_names(torchvision_model):
    assert torchvision_model.input_shape == (None, 224, 224, 3)  # Its default input.
    names = [layer.name for layer in torchvision_model.layers]
    assert names[1:] == list(TORCHVISION_LAYER_NAMES)
    shapes = {n: torchvision_model.get_layer(n).output.shape[1:] for n in TORCHVISION_LAYER_NAMES}
    assert shapes["conv1"] == (55, 55, 64)  # Padding 2 at stride 4, not "same" (56).
    assert shapes["pool1"] == (27, 27, 64)
    assert shapes["conv2"] == (27, 27, 192)
    assert shapes["pool2"] == (13, 13, 192)
    assert shapes["conv3"] == (13, 13, 384)
    assert shapes["conv4"] == shapes["conv5"] == (13, 13, 256)
    assert shapes["pool5"] == shapes["avgpool"] == shapes["drop5"] == (6, 6, 256)
    assert shapes["fc6"] == shapes["drop6"] == shapes["fc7"] == (4096,)
    assert shapes["fc8"] == (1000,)
    assert not any(isinstance(x, LocalResponseNormalization) for x in torchvision_model.layers)


def test_torchvision_dropout_before_fc6_and_fc7(torchvision_model):
    """torchvision's classifier: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear."""
    layers = torchvision_model.layers
    order = [layer.name for layer in layers]
    for drop, fc in (("drop5", "fc6"), ("drop6", "fc7")):
        assert order.index(fc) == order.index(drop) + 1
    assert order.index("fc8") == order.index("fc7") + 1  # Nothing drops fc7's output.
    assert torchvision_model.get_layer("drop5").rate == 0.5


@pytest.mark.parametrize("size,pool5", [(67, 1), (256, 7)])  # Repeated / overlapping windows.
def test_torchvision_other_sizes_pool_to_6x6(size, pool5):
    model = build_alexnet(10, (size, size, 3), **TORCHVISION)
    assert model.get_layer("pool5").output.shape[1:3] == (pool5, pool5)
    assert model.get_layer("avgpool").output.shape[1:] == (6, 6, 256)
    assert model.get_layer("fc6").kernels[0].shape == (9216, 4096)
    assert model(np.zeros((1, size, size, 3), np.float32)).shape == (1, 10)


def test_torchvision_config_round_trip(torchvision_model):
    """The layers a .keras file must revive (explicit padding, adaptive pool) rebuild the net."""
    clone = keras.Model.from_config(torchvision_model.get_config())
    assert clone.get_layer("conv1").padding == (2, 2)
    assert [layer.get_config() for layer in clone.layers] == [
        layer.get_config() for layer in torchvision_model.layers
    ]


def test_caffe_lrn_net_parameters_and_layers():
    model = build_alexnet(lrn_form="caffe", seed=0)
    assert model.count_params() == 60_965_224 == constants.NUM_PARAMETERS
    assert model.get_layer("conv2").groups == 2  # Convolutions keep the paper's columns.
    for name in ("lrn1", "lrn2"):
        lrn = model.get_layer(name)
        assert (lrn.depth_radius, lrn.bias, lrn.beta, lrn.groups) == (2, 1.0, 0.75, 1)
        assert lrn.alpha == pytest.approx(2e-5)  # Caffe's 1e-4 divided by local_size 5.


def caffe_lrn(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's lrn_layer.cpp ACROSS_CHANNELS on NHWC: scale = k + alpha / n * window sum of x^2,
    the window zero-padded over ALL channels."""
    half = (local_size - 1) // 2
    padded = np.pad(x.astype(np.float64) ** 2, [(0, 0)] * 3 + [(half, half)])
    window = sum(padded[..., i : i + x.shape[-1]] for i in range(local_size))
    return x / (k + alpha / local_size * window) ** beta


def test_caffe_lrn_normalizes_across_both_columns():
    model = build_alexnet(10, (67, 67, 3), lrn_form="caffe", seed=2)
    probe = keras.Model(
        model.input, [model.get_layer("conv1").output, model.get_layer("lrn1").output]
    )
    x = np.random.default_rng(2).uniform(-128, 128, (2, 67, 67, 3)).astype(np.float32)
    conv1, lrn1 = (t.numpy() for t in probe(x))
    conv1 = np.maximum(conv1, 0.0)  # conv1's ReLU runs inside lrn1 (relu=True).
    expected = caffe_lrn(conv1)
    np.testing.assert_allclose(lrn1, expected, rtol=1e-5, atol=1e-6)
    # Channels 46-49 straddle the columns: the paper's per-column LRN differs there.
    paper_columns = np.concatenate([caffe_lrn(c) for c in np.split(conv1, 2, axis=-1)], axis=-1)
    boundary = np.abs(paper_columns - expected)[..., 46:50].max()
    assert boundary > 1e-3 * np.abs(expected).max()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(architecture="torchvision"), r"groups=1 and use_lrn=False.*Received: groups=2"),
        (dict(architecture="torchvision", groups=1), "Received: groups=1, use_lrn=True"),
        (dict(lrn_form="caffe", use_lrn=False), "needs use_lrn=True"),
        (dict(architecture="vgg"), "architecture"),
        (dict(lrn_form="torch"), "lrn_form"),
    ],
)
def test_bad_variant_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_alexnet(**kwargs)


def test_caffe_lrn_with_one_column_builds():
    model = build_alexnet(10, (67, 67, 3), groups=1, lrn_form="caffe")
    assert model.get_layer("lrn1").groups == 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(architecture="torchvision"), "--groups=2 is invalid: expected 1 with"),
        (dict(architecture="torchvision", groups=1), "--use_lrn=True is invalid: expected False"),
        (dict(lrn_form="caffe", use_lrn=False), "--lrn_form=caffe is invalid: expected paper with"),
        (dict(lrn_form="caffe", distribution="towers"), "--lrn_form=caffe is invalid: .*towers"),
    ],
)
def test_config_rejects_contradicting_flags(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_config_of_each_variant_builds_its_net():
    torchvision = TrainConfig(image_size=224, resize_size=256, **TORCHVISION)
    caffe = TrainConfig(lrn_form="caffe", distribution="mirrored")
    assert torchvision.model_kwargs()["architecture"] == "torchvision"
    model = build_alexnet(10, **dict(torchvision.model_kwargs(), input_shape=(67, 67, 3)))
    assert model.get_layer("avgpool").output_size == (6, 6)
    assert caffe.model_kwargs()["lrn_form"] == "caffe"
