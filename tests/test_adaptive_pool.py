"""AdaptiveAveragePooling2D against a NumPy implementation of torch's window formula (and torch)."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras.layers import AdaptiveAveragePooling2D


def numpy_adaptive_avg_pool(x, output_size):
    """torch's AdaptiveAvgPool2d, NHWC: output (i, j) averages rows [floor(i H / h), ceil((i + 1)
    H / h)) and columns [floor(j W / w), ceil((j + 1) W / w)), one window at a time."""
    batch, height, width, channels = x.shape
    out_h, out_w = output_size
    y = np.zeros((batch, out_h, out_w, channels), np.float64)
    for i in range(out_h):
        top, bottom = math.floor(i * height / out_h), math.ceil((i + 1) * height / out_h)
        for j in range(out_w):
            left, right = math.floor(j * width / out_w), math.ceil((j + 1) * width / out_w)
            y[:, i, j] = x[:, top:bottom, left:right].mean(axis=(1, 2))
    return y


# (input height, width) -> output: divisible, overlapping windows (13 -> 6, pool5 at 227-ish
# sizes), fewer inputs than outputs (2 -> 6 repeats rows), and a non-square case.
CASES = [((12, 12), (6, 6)), ((13, 13), (6, 6)), ((2, 3), (6, 6)), ((7, 9), (3, 4)), ((5, 5), 1)]


@pytest.mark.parametrize("input_size,output_size", CASES)
def test_matches_torch_formula(input_size, output_size):
    x = np.random.default_rng(sum(input_size)).normal(size=(2, *input_size, 3))
    layer = AdaptiveAveragePooling2D(output_size)
    pair = (output_size, output_size) if isinstance(output_size, int) else output_size
    expected = numpy_adaptive_avg_pool(x, pair)
    np.testing.assert_allclose(layer(x.astype(np.float32)).numpy(), expected, atol=1e-5)
    assert layer.compute_output_shape((None, *input_size, 3)) == (None, *pair, 3)


def test_identity_at_output_size():
    """torchvision at 224: pool5 is already 6x6, so the layer passes it through unchanged."""
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(AdaptiveAveragePooling2D(6)(x).numpy(), x)


def test_matches_torch_itself():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, 13, 11, 5)).astype(np.float32)
    expected = torch.nn.AdaptiveAvgPool2d((6, 4))(torch.from_numpy(x).permute(0, 3, 1, 2))
    ours = AdaptiveAveragePooling2D((6, 4))(x).numpy()
    np.testing.assert_allclose(ours, expected.permute(0, 2, 3, 1).numpy(), atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_traced_equals_eager(jit):
    layer = AdaptiveAveragePooling2D(6)
    fn = tf.function(layer, jit_compile=jit)
    for size in (13, 9):
        x = np.random.default_rng(size).normal(size=(1, size, size, 3)).astype(np.float32)
        np.testing.assert_allclose(fn(x).numpy(), layer(x).numpy(), atol=1e-6)


def test_needs_a_known_height_and_width():
    """The windows are fixed when the layer is built (a model's input size is)."""
    fn = tf.function(AdaptiveAveragePooling2D(6), input_signature=[tf.TensorSpec([None] * 3 + [3])])
    with pytest.raises(ValueError, match=r"of known size. Received: input_shape=\(None, None"):
        fn.get_concrete_function()


def test_config_json_and_keras_file_round_trip(tmp_path):
    layer = AdaptiveAveragePooling2D((6, 4), name="avgpool")
    config = layer.get_config()
    assert config["output_size"] == (6, 4)
    assert AdaptiveAveragePooling2D.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert isinstance(revived, AdaptiveAveragePooling2D) and revived.output_size == (6, 4)
    inputs = keras.Input((13, 13, 2))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(2).normal(size=(2, 13, 13, 2)).astype(np.float32)
    model.save(tmp_path / "pool.keras")
    reloaded = keras.saving.load_model(tmp_path / "pool.keras")
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())
    assert not layer.weights


@pytest.mark.parametrize("output_size", [0, (6, 0), (1, 2, 3), "6"])
def test_bad_output_size(output_size):
    with pytest.raises(ValueError, match="output_size"):
        AdaptiveAveragePooling2D(output_size)


def test_needs_4d_input():
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\)"):
        AdaptiveAveragePooling2D(6)(np.zeros((2, 13, 3), np.float32))
