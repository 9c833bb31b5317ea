"""GroupedConv2D and GroupedMaxPool2D against plain per-group TF ops and Keras's own layers."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from train_helpers import REPO

from alexnet_keras.layers import GroupedConv2D, GroupedMaxPool2D, columns, grouped_conv, winograd
from alexnet_keras.layers.grouped_conv import space_to_depth_conv

# (kernel, strides, padding) of AlexNet's convolutions.
ALEXNET_CONVS = [(11, 4, "valid"), (5, 1, "same"), (3, 1, "same")]


def reference_grouped_conv(x, kernels, biases, strides, padding):
    """Independent reference: split channels, tf.nn.conv2d per group, add bias, concatenate."""
    parts = tf.split(x, len(kernels), axis=-1)
    outs = [
        tf.nn.conv2d(p, k, strides, padding.upper()) + b for p, k, b in zip(parts, kernels, biases)
    ]
    return tf.concat(outs, axis=-1)


@pytest.mark.parametrize("pinned", [False, True])  # One grouped op, or one op per device.
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("kernel,strides,padding", ALEXNET_CONVS)
def test_matches_per_group_conv_forward_and_gradients(groups, kernel, strides, padding, pinned):
    rng = np.random.default_rng(groups * 100 + kernel)
    x = tf.constant(rng.normal(size=(2, 23, 23, 8)), tf.float32)
    devices = [f"/cpu:{g % 2}" for g in range(groups)] if pinned else None
    layer = GroupedConv2D(
        16, kernel, strides=strides, padding=padding, groups=groups, devices=devices
    )
    layer.build(x.shape)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    kernels = [tf.identity(k) for k in layer.kernels]
    biases = [tf.identity(b) for b in layer.biases]
    out_shape = columns.whole_shape(layer.compute_output_shape(x.shape))
    upstream = tf.constant(rng.normal(size=out_shape), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, *kernels, *biases])
        ours = columns.whole(layer(x))  # Towers return one tensor per column.
        ref = reference_grouped_conv(x, kernels, biases, strides, padding)
        loss_ours = tf.reduce_sum(ours * upstream)
        loss_ref = tf.reduce_sum(ref * upstream)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    assert ours.shape == out_shape
    grads_ours = tape.gradient(loss_ours, [x, *layer.trainable_weights])
    grads_ref = tape.gradient(loss_ref, [x] + [w for kb in zip(kernels, biases) for w in kb])
    for g_ours, g_ref in zip(grads_ours, grads_ref):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel,strides,padding", ALEXNET_CONVS)
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
    x = np.random.default_rng(1).normal(size=(2, 15, 15, 6)).astype(np.float32)
    ours = GroupedConv2D(8, 3, padding="same", groups=2, split_input=False)
    ours.build(x.shape)
    assert ours.kernels[0].shape == (3, 3, 6, 4)
    keras_conv = keras.layers.Conv2D(8, 3, padding="same")
    keras_conv.build(x.shape)
    kernel = np.concatenate([k.numpy() for k in ours.kernels], axis=-1)
    bias = np.concatenate([b.numpy() for b in ours.biases])
    keras_conv.set_weights([kernel, bias])
    np.testing.assert_allclose(ours(x).numpy(), keras_conv(x).numpy(), rtol=1e-5, atol=1e-5)


def test_weight_count_and_names():
    layer = GroupedConv2D(256, 5, padding="same", groups=2)
    layer.build((None, 27, 27, 96))
    assert [w.shape for w in layer.weights] == [(5, 5, 48, 128), (128,), (5, 5, 48, 128), (128,)]
    assert sum(int(np.prod(w.shape)) for w in layer.weights) == 307_456  # The paper's conv2.
    assert [w.path.split("/")[-1] for w in layer.weights] == [
        "kernel_0",
        "bias_0",
        "kernel_1",
        "bias_1",
    ]


@pytest.mark.parametrize("jit", [False, True])
def test_traced_equals_eager(jit):
    x = np.random.default_rng(2).normal(size=(1, 13, 13, 8)).astype(np.float32)
    layer = GroupedConv2D(8, 3, padding="same", groups=2, activation="relu")
    eager = layer(x).numpy()
    np.testing.assert_allclose(tf.function(layer, jit_compile=jit)(x).numpy(), eager, atol=1e-5)


def test_config_round_trip_json_and_keras_file(tmp_path):
    layer = GroupedConv2D(
        8, (3, 3), strides=2, padding="same", groups=2, activation="relu",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=1),
        bias_initializer="ones", kernel_regularizer=keras.regularizers.L2(5e-4), name="g",
    )  # fmt: skip
    config = layer.get_config()
    for key in ("filters", "kernel_size", "strides", "padding", "groups", "split_input",
                "activation", "use_bias", "kernel_initializer", "bias_initializer",
                "kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint",
                "devices"):  # fmt: skip
        assert key in config
    clone = GroupedConv2D.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert isinstance(revived, GroupedConv2D) and revived.get_config() == config

    inputs = keras.Input((9, 9, 4))
    model = keras.Model(inputs, GroupedMaxPool2D(3, 2, groups=2)(layer(inputs)))
    x = np.random.default_rng(3).normal(size=(2, 9, 9, 4)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())


def test_devices_pin_each_group():
    layer = GroupedConv2D(8, 3, groups=2, devices=["/cpu:0", "/cpu:1"])
    x = tf.zeros((1, 8, 8, 4))
    graph = tf.function(layer).get_concrete_function(x).graph
    conv_devices = {op.device for op in graph.get_operations() if op.type == "Conv2D"}
    assert any("CPU:0" in d for d in conv_devices) and any("CPU:1" in d for d in conv_devices)
    assert "CPU:1" in layer.kernels[1].value.device


@pytest.mark.parametrize("devices", [None, ["/cpu:0", "/cpu:1"]])
def test_max_pool_groups_equal_keras_pool(devices):
    x = np.random.default_rng(4).normal(size=(2, 13, 13, 8)).astype(np.float32)
    ours = GroupedMaxPool2D(3, 2, groups=2, devices=devices)
    pooled = columns.whole(ours(x))
    np.testing.assert_array_equal(pooled.numpy(), keras.layers.MaxPooling2D(3, 2)(x).numpy())
    shape = columns.whole_shape(ours.compute_output_shape((None, 13, 13, 8)))
    assert shape == (None, 6, 6, 8)
    assert GroupedMaxPool2D.from_config(ours.get_config()).get_config() == ours.get_config()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(filters=95, kernel_size=3, groups=2), r"Received: groups=2, filters=95"),
        (dict(filters=0, kernel_size=3), "filters"),
        (dict(filters=8, kernel_size=3, groups=0), "groups"),
        (dict(filters=8, kernel_size=0), "kernel_size"),
        (dict(filters=8, kernel_size=3, strides=(1, 2, 3)), "strides"),
        (dict(filters=8, kernel_size=3, padding="full"), "padding"),
        (dict(filters=8, kernel_size=3, groups=2, devices=["/cpu:0"]), "devices"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupedConv2D(**kwargs)


def test_input_channels_not_divisible():
    with pytest.raises(ValueError, match="groups=2, input channels=3"):
        GroupedConv2D(8, 3, groups=2)(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="groups"):
        GroupedMaxPool2D(groups=2)(np.zeros((1, 5, 5, 3), np.float32))


def reference_explicit_padding_conv(x, kernels, biases, strides, padding):
    """Independent reference: per group, TF's Conv2D with an explicit padding list (ungrouped, so
    it has a CPU gradient)."""
    rows, cols = padding
    paddings = [[0, 0], [rows, rows], [cols, cols], [0, 0]]
    parts = tf.split(x, len(kernels), axis=-1)
    outs = [tf.nn.conv2d(p, k, strides, paddings) + b for p, k, b in zip(parts, kernels, biases)]
    return tf.concat(outs, axis=-1)


@pytest.mark.parametrize("pinned", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("padding,pair", [(2, (2, 2)), ((1, 3), (1, 3)), ([0, 1], (0, 1))])
def test_explicit_padding_forward_and_gradients(groups, padding, pair, pinned):
    """torch-style integer padding (torchvision's conv1: 11x11, stride 4, padding 2)."""
    rng = np.random.default_rng(groups * 10 + pair[1])
    x = tf.constant(rng.normal(size=(2, 23, 21, 4)), tf.float32)
    devices = ["/cpu:0", "/cpu:1"][:groups] if pinned else None
    layer = GroupedConv2D(
        8, (5, 3), strides=(4, 2), padding=padding, groups=groups, devices=devices
    )
    layer.build(x.shape)
    assert layer.padding == pair
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    kernels = [tf.identity(k) for k in layer.kernels]
    biases = [tf.identity(b) for b in layer.biases]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, *kernels, *biases])
        ours = columns.whole(layer(x))
        ref = reference_explicit_padding_conv(x, kernels, biases, (4, 2), pair)
        upstream = tf.constant(rng.normal(size=ref.shape), tf.float32)
        loss_ours = tf.reduce_sum(ours * upstream)
        loss_ref = tf.reduce_sum(ref * upstream)
    expected_shape = (2, (23 + 2 * pair[0] - 5) // 4 + 1, (21 + 2 * pair[1] - 3) // 2 + 1, 8)
    assert ours.shape == ref.shape == expected_shape
    assert columns.whole_shape(layer.compute_output_shape((2, 23, 21, 4))) == expected_shape
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    grads_ref = tape.gradient(loss_ref, [x] + [w for kb in zip(kernels, biases) for w in kb])
    grads_ours = tape.gradient(loss_ours, [x, *layer.trainable_weights])
    for g_ours, g_ref in zip(grads_ours, grads_ref):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-3)


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


@pytest.mark.parametrize("jit", [False, True])
def test_explicit_padding_traced_and_saved(tmp_path, jit):
    x = np.random.default_rng(5).normal(size=(2, 15, 15, 4)).astype(np.float32)
    layer = GroupedConv2D(8, 5, strides=2, padding=(2, 1), groups=2, name="c")
    eager = layer(x).numpy()
    np.testing.assert_allclose(tf.function(layer, jit_compile=jit)(x).numpy(), eager, atol=1e-5)
    config = layer.get_config()
    assert config["padding"] == (2, 1)
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert revived.padding == (2, 1) and revived.get_config() == config
    inputs = keras.Input((15, 15, 4))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "padded.keras")
    reloaded = keras.saving.load_model(tmp_path / "padded.keras")
    np.testing.assert_array_equal(reloaded(x).numpy(), eager)


@pytest.mark.parametrize("padding", [-1, (1, 2, 3), (1, -2), True, 1.5, "full"])
def test_bad_explicit_padding(padding):
    with pytest.raises(ValueError, match=r"`padding` must be .*Received: padding="):
        GroupedConv2D(8, 3, padding=padding)


@pytest.mark.parametrize(
    "height,width,kernel,stride",
    [(227, 227, (11, 11), 4), (228, 228, (11, 11), 4), (17, 14, (5, 3), 3), (9, 9, (4, 4), 2)],
)
def test_space_to_depth_conv_equals_strided_conv(height, width, kernel, stride):
    """The folded stride-1 convolution computes the strided one's sums (float32, so only the
    order of the additions differs): outputs and both gradients."""
    rng = np.random.default_rng(height + stride)
    x = tf.constant(rng.normal(size=(2, height, width, 3)), tf.float32)
    k = tf.constant(rng.normal(size=(*kernel, 3, 8)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, k])
        ours = space_to_depth_conv(x, k, stride)
        ref = tf.nn.conv2d(x, k, stride, "VALID")
        upstream = tf.constant(rng.normal(size=ref.shape), tf.float32)
        loss_ours, loss_ref = tf.reduce_sum(ours * upstream), tf.reduce_sum(ref * upstream)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)
    for g_ours, g_ref in zip(tape.gradient(loss_ours, [x, k]), tape.gradient(loss_ref, [x, k])):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("padding", ["valid", 2])
def test_bfloat16_conv1_runs_folded_and_matches_float32(padding):
    """Under bfloat16 the paper's conv1 runs as space_to_depth + a 3x3 convolution on 48
    channels (the graph says so), and agrees with the float32 layer to bfloat16's rounding."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 227, 227, 3)).astype(np.float32)
    layers = [
        GroupedConv2D(96, 11, strides=4, padding=padding, split_input=False, dtype=policy)
        for policy in ("mixed_bfloat16", "float32")
    ]
    for layer in layers:
        layer.build(x.shape)
    for v, w in zip(*(layer.weights for layer in layers)):
        w.assign(v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32)))
    graph = tf.function(layers[0]).get_concrete_function(tf.TensorSpec(x.shape)).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert [(op.inputs[0].shape[-1], op.get_attr("strides")) for op in convs] == [
        (48, [1, 1, 1, 1])  # 4x4 blocks of 3 channels, stride 1: the folded convolution.
    ]
    ours = tf.cast(layers[0](x), tf.float32).numpy()
    ref = layers[1](tf.cast(tf.cast(x, tf.bfloat16), tf.float32)).numpy()  # The same inputs.
    side = 55 if padding == "valid" else 56
    assert ours.shape == ref.shape == (2, side, side, 96)
    np.testing.assert_allclose(ours, ref, rtol=2e-2, atol=1e-2 * np.abs(ref).max())


def _conv2d_channels(layer, shape):
    """(input channels, kernel input channels) of each Conv2D in the layer's traced graph."""
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape)).graph
    ops = [op for op in graph.get_operations() if op.type == "Conv2D"]
    return [(op.inputs[0].shape[-1], op.inputs[1].shape[2]) for op in ops]


@pytest.mark.parametrize("native", [True, False])
def test_grouped_kernel_only_where_tf_runs_one_and_never_in_a_saved_model(monkeypatch, native):
    """conv2 as one grouped Conv2D (96 input channels, kernel reads 48) where oneDNN runs it,
    else one Conv2D per group; traced for a SavedModel, always one per group."""
    monkeypatch.setattr(grouped_conv, "native_grouped_kernels", lambda dtype: native)
    monkeypatch.setattr(winograd, "runs_in", lambda dtype: False)  # conv3 direct, not Winograd.
    layer = GroupedConv2D(256, 5, padding="same", groups=2)
    layer.build((1, 27, 27, 96))
    assert _conv2d_channels(layer, (1, 27, 27, 96)) == ([(96, 48)] if native else [(48, 48)] * 2)
    with grouped_conv.per_group_ops():
        assert _conv2d_channels(layer, (1, 27, 27, 96)) == [(48, 48)] * 2
    conv3 = GroupedConv2D(384, 3, padding="same", groups=2, split_input=False)
    conv3.build((1, 13, 13, 256))  # Reads all channels: one Conv2D either way.
    assert _conv2d_channels(conv3, (1, 13, 13, 256)) == [(256, 256)]


_TRAIN_STEP = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from alexnet_keras.layers import GroupedConv2D, grouped_conv
    dtype = sys.argv[2]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 13, 13, 8)), tf.float32)
    policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
    layer = GroupedConv2D(16, 3, padding="same", groups=2, activation="relu", dtype=policy)
    layer.build(x.shape)
    for v in layer.weights:  # Values bfloat16 holds exactly, so the reference sees the same.
        v.assign(tf.cast(tf.cast(rng.normal(size=v.shape), tf.bfloat16), tf.float32))

    @tf.function  # Grappler fuses Conv2D + BiasAdd + Relu here, as in training.
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_sum(y * y)
        grads = tape.gradient(loss, [x, *layer.kernels, *layer.biases])
        return y, [tf.cast(g, tf.float32) for g in grads]

    x = tf.cast(tf.cast(x, tf.bfloat16), tf.float32)
    y, grads = step(x)
    np.savez(sys.argv[1], native=grouped_conv.native_grouped_kernels(dtype), x=x, y=y,
             kernels=np.stack(layer.kernels), biases=np.stack(layer.biases),
             grads=np.array([g.numpy().ravel() for g in grads], dtype=object))
""")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("onednn", ["1", "0"])
def test_grouped_train_step_runs_with_and_without_onednn(tmp_path, onednn, dtype):
    """A traced grouped step with the bias and ReLU fused in, in a process with oneDNN on and
    one with it off (TF's own CPU kernels, the default on CPUs without AVX512): it runs and gives
    the plain per-group convolution's outputs and gradients (bfloat16: to its rounding)."""
    out = tmp_path / "step.npz"
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _TRAIN_STEP, str(out), dtype], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(out, allow_pickle=True)
    if dtype == "float32":  # oneDNN takes float32 on every x86 CPU; bfloat16 only on some.
        assert bool(result["native"]) == (onednn == "1")
    elif onednn == "0":
        assert not result["native"]
    x = tf.constant(result["x"])
    kernels = [tf.constant(k) for k in result["kernels"]]
    biases = [tf.constant(b) for b in result["biases"]]
    with tf.GradientTape() as tape:
        tape.watch([x, *kernels, *biases])
        ref = tf.nn.relu(reference_grouped_conv(x, kernels, biases, 1, "same"))
        loss = tf.reduce_sum(ref * ref)
    tolerance = 1e-4 if dtype == "float32" else 3e-2
    ours_and_refs = [(result["y"], ref.numpy())] + [
        (ours, theirs.numpy().ravel())
        for ours, theirs in zip(result["grads"], tape.gradient(loss, [x, *kernels, *biases]))
    ]
    for ours, theirs in ours_and_refs:
        atol = tolerance * max(1.0, np.abs(theirs).max())
        np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=atol)
