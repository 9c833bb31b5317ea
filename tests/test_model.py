"""The model's structure against the paper: parameter count, feature maps, initialization."""

import keras
import numpy as np
import pytest

from alexnet_keras import constants
from alexnet_keras.model import LAYER_NAMES, build_alexnet


@pytest.fixture(scope="module")
def paper_model():
    return build_alexnet(seed=0)


def test_parameter_count_is_the_papers(paper_model):
    assert paper_model.count_params() == 60_965_224 == constants.NUM_PARAMETERS


def test_parameter_count_by_layer_formula(paper_model):
    """Independent count: kernel volume x filters + biases, per layer, from the paper's Fig. 2."""
    expected = {
        "conv1": 11 * 11 * 3 * 96 + 96,
        "conv2": 5 * 5 * 48 * 256 + 256,
        "conv3": 3 * 3 * 256 * 384 + 384,
        "conv4": 3 * 3 * 192 * 384 + 384,
        "conv5": 3 * 3 * 192 * 256 + 256,
        "fc6": 6 * 6 * 256 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096,
        "fc8": 4096 * 1000 + 1000,
    }
    for name, count in expected.items():
        assert paper_model.get_layer(name).count_params() == count, name


def test_feature_map_shapes(paper_model):
    shapes = {name: paper_model.get_layer(name).output.shape[1:] for name in LAYER_NAMES}
    assert shapes["conv1"] == (55, 55, 96)
    assert shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256)
    assert shapes["pool2"] == (13, 13, 256)
    assert shapes["conv3"] == (13, 13, 384)
    assert shapes["conv4"] == (13, 13, 384)
    assert shapes["conv5"] == (13, 13, 256)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["fc8"] == (1000,)


def test_layer_names_are_stable(paper_model):
    names = [layer.name for layer in paper_model.layers]
    assert [n for n in names if n in LAYER_NAMES] == list(LAYER_NAMES)


def test_paper_initialization(paper_model):
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        layer = paper_model.get_layer(name)
        kernels = [w.numpy() for w in layer.weights if "kernel" in w.path]
        biases = [w.numpy() for w in layer.weights if "bias" in w.path]
        values = np.concatenate([k.ravel() for k in kernels])
        assert abs(values.std() - 0.01) < 0.0005, name
        assert abs(values.mean()) < 0.001, name
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert all(np.all(b == expected_bias) for b in biases), name


def test_other_initializers_and_seed():
    a = build_alexnet(
        10, (67, 67, 3), kernel_initializer="he_normal", bias_initializer="zeros", seed=3
    )
    b = build_alexnet(
        10, (67, 67, 3), kernel_initializer="he_normal", bias_initializer="zeros", seed=3
    )
    conv1 = a.get_layer("conv1").kernels[0].numpy()
    assert abs(conv1.std() - np.sqrt(2.0 / (11 * 11 * 3))) < 0.01  # He: sqrt(2 / fan_in).
    assert all(np.all(b.numpy() == 0) for b in a.get_layer("fc6").biases)
    x = np.random.default_rng(0).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


COLUMN_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def _columns(model, name):
    return [k.numpy() for k in model.get_layer(name).kernels]


@pytest.mark.parametrize("seed", [None, 3])
def test_each_column_is_its_own_draw(seed):
    """Sec. 3.2: the two GPUs' columns start as different networks (they were identical before)."""
    model = build_alexnet(10, (67, 67, 3), seed=seed)
    for name in COLUMN_LAYERS:
        first, second = _columns(model, name)
        assert first.shape == second.shape, name
        assert np.mean(first == second) < 0.01, name  # Not the same draw...
        assert abs(first.std() - second.std()) < 0.1 * first.std(), name  # ...of one distribution.
    pool5 = keras.Model(model.input, model.get_layer("pool5").output)
    x = np.random.default_rng(0).uniform(-100, 100, (1, 67, 67, 3)).astype(np.float32)
    features = pool5(x).numpy()
    assert not np.array_equal(features[..., :128], features[..., 128:])


def test_seed_reproduces_every_column_and_different_seeds_differ():
    a, b, c = (build_alexnet(10, (67, 67, 3), seed=s) for s in (3, 3, 4))
    for name in COLUMN_LAYERS:
        for ka, kb, kc in zip(_columns(a, name), _columns(b, name), _columns(c, name)):
            np.testing.assert_array_equal(ka, kb)
            assert not np.array_equal(ka, kc), name


@pytest.mark.parametrize("size,pool5", [(67, 1), (99, 2), (131, 3)])
def test_small_inputs(size, pool5):
    model = build_alexnet(10, (size, size, 3))
    assert model.get_layer("pool5").output.shape[1:3] == (pool5, pool5)
    assert model.get_layer("fc6").kernels[0].shape[0] == pool5 * pool5 * 256
    assert model(np.zeros((1, size, size, 3), np.float32)).shape == (1, 10)


def test_one_column_net():
    model = build_alexnet(groups=1)
    # conv2, conv4, conv5 see all input channels: their kernels double.
    extra = 5 * 5 * 48 * 256 + 3 * 3 * 192 * 384 + 3 * 3 * 192 * 256
    assert model.count_params() == constants.NUM_PARAMETERS + extra
    assert not any("LocalResponse" in type(x).__name__ for x in build_alexnet(use_lrn=False).layers)


def test_logits_are_float32_under_mixed_precision(mixed_policy):
    mixed_policy("mixed_bfloat16")
    model = build_alexnet(10, (67, 67, 3))
    out = model(np.random.default_rng(0).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32))
    assert out.dtype == "float32" and np.all(np.isfinite(out.numpy()))
    assert model.get_layer("conv2").compute_dtype == "bfloat16"


def test_keras_file_round_trip(tmp_path):
    model = build_alexnet(10, (67, 67, 3), seed=1)
    x = np.random.default_rng(1).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32)
    model.save(tmp_path / "alexnet.keras")
    reloaded = keras.saving.load_model(tmp_path / "alexnet.keras")
    np.testing.assert_array_equal(
        reloaded(x, training=False).numpy(), model(x, training=False).numpy()
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_shape=(66, 66, 3)), "at least 67x67"),
        (dict(input_shape=(227, 200, 3)), "input_shape"),
        (dict(num_classes=1), "num_classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(groups=3), "groups"),
        (dict(kernel_initializer="uniform"), "kernel_initializer"),
        (dict(bias_initializer="ones"), "bias_initializer"),
        (dict(dropout_form="gaussian"), "Received: dropout_form='gaussian'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_alexnet(**kwargs)


@pytest.mark.parametrize("lrn_form", ["paper", "caffe"])
def test_relu_inside_lrn_is_the_papers_relu_then_lrn(lrn_form):
    """conv1 and conv2 have no activation and lrn1/lrn2 apply their ReLU (its gradient folded
    into LRN's): the same logits as the paper's order, a ReLU after each conv, then LRN."""
    model = build_alexnet(num_classes=10, input_shape=(67, 67, 3), lrn_form=lrn_form, seed=0)
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] in ("conv1", "conv2"):
            assert layer["config"]["activation"] in (None, "linear")
            layer["config"]["activation"] = "relu"
        if layer["config"]["name"] in ("lrn1", "lrn2"):
            assert layer["config"]["relu"] is True
            layer["config"]["relu"] = False
    relu_first = keras.Model.from_config(config)
    relu_first.set_weights(model.get_weights())
    images = np.random.default_rng(0).normal(0, 50, (2, 67, 67, 3)).astype(np.float32)
    np.testing.assert_allclose(model(images).numpy(), relu_first(images).numpy(), rtol=1e-6)
    assert build_alexnet(use_lrn=False).get_layer("conv1").activation is keras.activations.relu
