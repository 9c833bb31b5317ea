"""GroupedConv2D and GroupedMaxPool2D against per-column `tf.nn.conv2d` and Keras's own layers."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras.layers import GroupedConv2D, GroupedMaxPool2D

# (kernel, strides, padding): AlexNet's convolutions, then torch-style explicit padding
# (torchvision's conv1 is 11x11, stride 4, padding 2) with unequal sides and strides.
CONVS = [
    (11, 4, "valid"),
    (5, 1, "same"),
    (3, 1, "same"),
    ((5, 3), (4, 2), 2),
    ((5, 3), (4, 2), (1, 3)),
    (3, 2, [0, 1]),
]
# (groups, split_input): one column; grouped (conv2, conv4, conv5); every column reading the
# whole input (conv1, conv3); more columns than the paper's two.
COLUMNS = [(1, True), (2, True), (2, False), (4, True)]


def explicit(padding):
    """ "valid"/"same", or TF's explicit padding list for an int or pair (rows, cols) per side."""
    if isinstance(padding, str):
        return padding.upper()
    rows, cols = (padding, padding) if isinstance(padding, int) else padding
    return [[0, 0], [rows, rows], [cols, cols], [0, 0]]


def reference_grouped_conv(x, kernels, biases, strides, padding, split_input=True):
    """Independent reference: each column's tf.nn.conv2d on its slice (or on every channel), its
    bias added, the columns concatenated."""
    groups = len(kernels)
    parts = tf.split(x, groups, axis=-1) if split_input else [x] * groups
    outs = [
        tf.nn.conv2d(p, k, strides, explicit(padding)) + b
        for p, k, b in zip(parts, kernels, biases)
    ]
    return tf.concat(outs, axis=-1)


def _randomized(layer, shape, rng):
    """Builds the layer and gives every weight random values (biases included)."""
    layer.build(shape)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    return layer


@pytest.mark.parametrize("groups,split_input", COLUMNS)
@pytest.mark.parametrize("kernel,strides,padding", CONVS)
def test_matches_per_column_conv_forward_and_gradients(
    groups, split_input, kernel, strides, padding
):
    rng = np.random.default_rng(groups * 100 + len(str(padding)))
    x = tf.constant(rng.normal(size=(2, 23, 21, 8)), tf.float32)
    layer = GroupedConv2D(
        16, kernel, strides=strides, padding=padding, groups=groups, split_input=split_input
    )
    _randomized(layer, x.shape, rng)
    in_channels = 8 // groups if split_input else 8
    assert [k.shape[2:] for k in layer.kernels] == [(in_channels, 16 // groups)] * groups
    kernels = [tf.identity(k) for k in layer.kernels]
    biases = [tf.identity(b) for b in layer.biases]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, *kernels, *biases])
        ours = layer(x)
        ref = reference_grouped_conv(x, kernels, biases, strides, padding, split_input)
        upstream = tf.constant(rng.normal(size=ref.shape), tf.float32)
        loss_ours = tf.reduce_sum(ours * upstream)
        loss_ref = tf.reduce_sum(ref * upstream)
    assert ours.shape == ref.shape == layer.compute_output_shape(tuple(x.shape))
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    grads_ours = tape.gradient(loss_ours, [x, *layer.trainable_weights])
    grads_ref = tape.gradient(loss_ref, [x] + [w for kb in zip(kernels, biases) for w in kb])
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel,strides,padding", CONVS[:3])
def test_one_group_equals_keras_conv2d(kernel, strides, padding):
    x = np.random.default_rng(0).normal(size=(2, 19, 19, 6)).astype(np.float32)
    ours = GroupedConv2D(12, kernel, strides=strides, padding=padding, groups=1, activation="relu")
    ours.build(x.shape)
    keras_conv = keras.layers.Conv2D(
        12, kernel, strides=strides, padding=padding, activation="relu"
    )
    keras_conv.build(x.shape)
    keras_conv.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x).numpy(), keras_conv(x).numpy(), rtol=1e-5, atol=1e-5)


def test_unsplit_input_equals_conv2d_with_concatenated_kernels():
    """split_input=False (conv1, conv3): each column reads every channel; together a plain conv."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 15, 15, 6)).astype(np.float32)
    ours = _randomized(
        GroupedConv2D(8, 3, padding="same", groups=2, split_input=False), x.shape, rng
    )
    keras_conv = keras.layers.Conv2D(8, 3, padding="same")
    keras_conv.build(x.shape)
    kernel = np.concatenate([k.numpy() for k in ours.kernels], axis=-1)
    bias = np.concatenate([b.numpy() for b in ours.biases])
    keras_conv.set_weights([kernel, bias])
    np.testing.assert_allclose(ours(x).numpy(), keras_conv(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "groups,split_input,names,shapes",
    [
        (2, True, ["kernel_0", "bias_0", "kernel_1", "bias_1"], [(5, 5, 48, 128), (128,)] * 2),
        (2, False, ["kernel_0", "bias_0", "kernel_1", "bias_1"], [(5, 5, 96, 128), (128,)] * 2),
        (1, True, ["kernel", "bias"], [(5, 5, 96, 256), (256,)]),
    ],
)
def test_weight_count_and_names(groups, split_input, names, shapes):
    layer = GroupedConv2D(256, 5, padding="same", groups=groups, split_input=split_input)
    layer.build((None, 27, 27, 96))
    assert [w.path.split("/")[-1] for w in layer.weights] == names
    assert [w.shape for w in layer.weights] == shapes
    assert len(layer.kernels) == len(layer.biases) == groups
    if groups == 2 and split_input:
        assert layer.count_params() == 307_456  # The paper's conv2.
    no_bias = GroupedConv2D(256, 5, groups=groups, split_input=split_input, use_bias=False)
    no_bias.build((None, 27, 27, 96))
    assert [w.path.split("/")[-1] for w in no_bias.weights] == names[::2] and not no_bias.biases


def test_columns_are_different_draws_of_one_seeded_initializer():
    init = keras.initializers.RandomNormal(stddev=0.01, seed=1)
    first, second = (GroupedConv2D(8, 3, groups=2, kernel_initializer=init) for _ in range(2))
    for layer in (first, second):
        layer.build((None, 9, 9, 4))
    assert not np.array_equal(first.kernels[0].numpy(), first.kernels[1].numpy())
    for a, b in zip(first.kernels, second.kernels):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # Seeded: reproducible.


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("padding", ["same", (2, 1)])
def test_traced_equals_eager(jit, padding):
    x = np.random.default_rng(2).normal(size=(1, 13, 13, 8)).astype(np.float32)
    layer = GroupedConv2D(8, 3, strides=2, padding=padding, groups=2, activation="relu")
    eager = layer(x).numpy()
    traced = tf.function(layer, jit_compile=jit)(x).numpy()
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-5)


def test_bfloat16_policy_matches_float32_to_its_rounding():
    """conv1's shape at a small size: bfloat16 compute, float32 weights, float32's result to
    bfloat16's rounding."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 35, 35, 3)).astype(np.float32)
    ours, ref = (
        GroupedConv2D(16, 11, strides=4, padding=2, split_input=False, dtype=policy)
        for policy in ("mixed_bfloat16", "float32")
    )
    ours.build(x.shape), ref.build(x.shape)
    for v, w in zip(ours.weights, ref.weights):
        w.assign(v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32)))
    out = ours(x)
    assert out.dtype == "bfloat16" and all(w.dtype == "float32" for w in ours.weights)
    expected = ref(tf.cast(tf.cast(x, tf.bfloat16), tf.float32)).numpy()  # The same inputs.
    assert out.shape == expected.shape == (2, 8, 8, 16)  # (35 + 2 * 2 - 11) // 4 + 1 = 8.
    np.testing.assert_allclose(
        tf.cast(out, tf.float32).numpy(), expected, rtol=2e-2, atol=1e-2 * np.abs(expected).max()
    )


CONFIG_KEYS = (
    "filters", "kernel_size", "strides", "padding", "groups", "split_input", "activation",
    "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
    "kernel_constraint", "bias_constraint",
)  # fmt: skip


@pytest.mark.parametrize("padding", ["same", (2, 1)])
def test_config_round_trip_json_and_keras_file(tmp_path, padding):
    layer = GroupedConv2D(
        8, (3, 3), strides=2, padding=padding, groups=2, split_input=False, activation="relu",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=1),
        bias_initializer="ones", kernel_regularizer=keras.regularizers.L2(5e-4),
        kernel_constraint=keras.constraints.MaxNorm(2.0), name="g",
    )  # fmt: skip
    config = layer.get_config()
    assert set(CONFIG_KEYS) <= set(config) and "devices" not in config
    assert config["padding"] == padding and config["split_input"] is False
    assert GroupedConv2D.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert isinstance(revived, GroupedConv2D) and revived.get_config() == config

    inputs = keras.Input((9, 9, 4))
    model = keras.Model(inputs, GroupedMaxPool2D(3, 2, groups=2)(layer(inputs)))
    x = np.random.default_rng(3).normal(size=(2, 9, 9, 4)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.get_layer("g").get_config() == config
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())


def test_explicit_padding_is_not_same_at_stride_4():
    """torchvision's conv1 at 224: torch's padding 2 gives 55 outputs, TF's "same" 56."""
    shape = (None, 224, 224, 3)
    torch_style = GroupedConv2D(64, 11, strides=4, padding=2, groups=1)
    same = GroupedConv2D(64, 11, strides=4, padding="same", groups=1)
    assert torch_style.compute_output_shape(shape) == (None, 55, 55, 64)
    assert same.compute_output_shape(shape) == (None, 56, 56, 64)
    assert torch_style(tf.zeros((1, 224, 224, 3))).shape == (1, 55, 55, 64)
    assert GroupedConv2D(8, 3, padding=0).compute_output_shape((None, 9, 9, 4)) == (
        GroupedConv2D(8, 3, padding="valid").compute_output_shape((None, 9, 9, 4))
    )
    assert GroupedConv2D(8, 3, padding="SAME").padding == "same"


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_max_pool_equals_keras_pool(groups, padding):
    x = np.random.default_rng(4).normal(size=(2, 13, 12, 8)).astype(np.float32)
    ours = GroupedMaxPool2D(3, 2, padding=padding, groups=groups)
    expected = keras.layers.MaxPooling2D(3, 2, padding=padding)(x).numpy()
    np.testing.assert_array_equal(ours(x).numpy(), expected)
    np.testing.assert_array_equal(tf.function(ours)(x).numpy(), expected)
    assert ours.compute_output_shape((None, 13, 12, 8)) == (None, *expected.shape[1:])
    config = ours.get_config()
    assert {k: config[k] for k in ("pool_size", "strides", "padding", "groups")} == dict(
        pool_size=(3, 3), strides=(2, 2), padding=padding, groups=groups
    )
    assert GroupedMaxPool2D.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(ours)))
    )
    assert revived.get_config() == config and not ours.weights


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(filters=95, kernel_size=3, groups=2), r"Received: groups=2, filters=95"),
        (dict(filters=0, kernel_size=3), "Received: filters=0"),
        (dict(filters=8, kernel_size=3, groups=0), "Received: groups=0"),
        (dict(filters=8, kernel_size=0), "Received: kernel_size=0"),
        (dict(filters=8, kernel_size=3, strides=(1, 2, 3)), r"Received: strides=\(1, 2, 3\)"),
        (dict(filters=8, kernel_size=3, groups=2, devices=["/cpu:0"]), r"per group \(2\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupedConv2D(**kwargs)


@pytest.mark.parametrize("padding", [-1, (1, 2, 3), (1, -2), True, 1.5, "full"])
def test_bad_padding(padding):
    with pytest.raises(ValueError, match=r"`padding` must be .*Received: padding="):
        GroupedConv2D(8, 3, padding=padding)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(groups=0), "Received: groups=0"),
        (dict(padding="full"), "Received: padding=full"),
        (dict(pool_size=0), "Received: pool_size=0"),
        (dict(strides=(2, 2, 2)), "strides"),
        (dict(groups=2, devices=["/cpu:0"]), r"per group \(2\)"),
    ],
)
def test_bad_pool_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupedMaxPool2D(**kwargs)


def test_input_channels_not_divisible():
    with pytest.raises(ValueError, match="groups=2, input channels=3"):
        GroupedConv2D(8, 3, groups=2)(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="groups=2, input channels=3"):
        GroupedMaxPool2D(groups=2)(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="channel dimension of the input must be known"):
        GroupedConv2D(8, 3, groups=2).build((None, 5, 5, None))
    # Every column reads all channels: any input channel count works.
    assert GroupedConv2D(8, 3, groups=2, split_input=False)(np.zeros((1, 5, 5, 3))).shape[-1] == 8


@pytest.mark.parametrize(
    "layer_class,kwargs",
    [(GroupedConv2D, dict(filters=8, kernel_size=3, groups=2)), (GroupedMaxPool2D, dict(groups=2))],
)
def test_legacy_devices_config_loads_and_computes_the_same(layer_class, kwargs):
    """Files saved before 0.2 carry `devices` (the layers placed their own columns then)."""
    layer = layer_class(**kwargs)
    x = np.random.default_rng(6).normal(size=(1, 7, 7, 4)).astype(np.float32)
    expected = layer(x).numpy()
    revived = layer_class.from_config(dict(layer.get_config(), devices=["/cpu:0", "/cpu:1"]))
    assert "devices" not in revived.get_config()
    revived.build(x.shape)
    revived.set_weights(layer.get_weights())
    np.testing.assert_array_equal(revived(x).numpy(), expected)


def test_fast_call_is_an_unsaved_switch():
    layer = GroupedConv2D(8, 3, groups=2)
    x = np.ones((1, 5, 5, 4), np.float32)
    assert layer.fast_call is None
    calls = []
    layer.fast_call = lambda owner, inputs: calls.append(owner) or tf.zeros((1, 3, 3, 8))
    assert not np.any(layer(x).numpy()) and calls == [layer]
    assert GroupedConv2D.from_config(layer.get_config()).fast_call is None
