"""LocalResponseNormalization against an independent NumPy evaluation of the paper's formula."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras import cpu
from alexnet_keras.layers import LocalResponseNormalization, lrn


@pytest.fixture(autouse=True, params=["band_convolution", "shifted_slices"])
def window_sum_form(request, monkeypatch):
    """Every test runs both forms of the window sum, whichever this machine's CPU would pick."""
    monkeypatch.setattr(cpu, "runs_avx2_kernels", lambda: request.param == "shifted_slices")
    return request.param


def numpy_lrn(a, depth_radius=2, k=2.0, alpha=1e-4, beta=0.75):
    """Sec. 3.3: b[c] = a[c] / (k + alpha * sum_{|c'-c|<=r} a[c']^2) ** beta (alpha not / n)."""
    a = a.astype(np.float64)
    channels = a.shape[-1]
    out = np.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - depth_radius), min(channels, c + depth_radius + 1)
        out[..., c] = a[..., c] / (k + alpha * np.sum(a[..., lo:hi] ** 2, axis=-1)) ** beta
    return out


def plain_tf_lrn(a, depth_radius=2, k=2.0, alpha=1e-4, beta=0.75):
    squares = tf.square(a)
    channels = a.shape[-1]
    padded = tf.pad(squares, [[0, 0]] * 3 + [[depth_radius, depth_radius]])
    window = tf.add_n([padded[..., i : i + channels] for i in range(2 * depth_radius + 1)])
    return a / (k + alpha * window) ** beta


@pytest.mark.parametrize("depth_radius", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 5, 5, 8), (1, 3, 7, 96), (3, 2, 2, 5)])
def test_matches_numpy_formula(depth_radius, shape):
    rng = np.random.default_rng(depth_radius)
    a = rng.uniform(-300, 300, size=shape).astype(np.float32)
    layer = LocalResponseNormalization(depth_radius=depth_radius)
    np.testing.assert_allclose(layer(a).numpy(), numpy_lrn(a, depth_radius), rtol=1e-5)


def test_groups_normalize_each_column_alone():
    a = np.random.default_rng(0).uniform(-300, 300, size=(2, 4, 4, 12)).astype(np.float32)
    expected = np.concatenate([numpy_lrn(a[..., :6]), numpy_lrn(a[..., 6:])], axis=-1)
    actual = LocalResponseNormalization(groups=2)(a).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    # Channels 5 and 6 sit at the column boundary, so the one-column result differs there.
    assert not np.allclose(LocalResponseNormalization()(a).numpy()[..., 5], expected[..., 5])


def test_gradient_matches_autodiff_of_plain_formula():
    a = tf.constant(np.random.default_rng(1).uniform(-300, 300, (2, 3, 3, 16)), tf.float32)
    layer = LocalResponseNormalization()
    upstream = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 3, 16)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        ours = tf.reduce_sum(layer(a) * upstream)
        reference = tf.reduce_sum(plain_tf_lrn(a) * upstream)
    np.testing.assert_allclose(
        tape.gradient(ours, a).numpy(), tape.gradient(reference, a).numpy(), rtol=1e-4, atol=1e-7
    )


def _per_column_reference(a, groups):
    """The plain formula applied to each column on its own, concatenated (autodiff-able)."""
    return tf.concat([plain_tf_lrn(column) for column in tf.split(a, groups, axis=-1)], axis=-1)


@pytest.mark.parametrize("path", ["one_op", "pinned_whole_input", "pinned_column_inputs"])
def test_two_column_gradient_matches_autodiff_of_plain_formula_per_column(path):
    """groups=2, as one grouped op and pinned to a device per column (list in, list out)."""
    channels = 16
    a = tf.constant(np.random.default_rng(8).uniform(-300, 300, (2, 3, 3, channels)), tf.float32)
    upstream = tf.constant(np.random.default_rng(9).normal(size=(2, 3, 3, channels)), tf.float32)
    devices = None if path == "one_op" else ["/cpu:0", "/cpu:1"]
    layer = LocalResponseNormalization(groups=2, devices=devices)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        columns = tf.split(a, 2, axis=-1)
        out = layer(columns if path == "pinned_column_inputs" else a)
        if devices:
            assert isinstance(out, list) and len(out) == 2
            assert [o.shape for o in out] == [(2, 3, 3, channels // 2)] * 2
            assert [o.device.rsplit("/", 1)[1] for o in out] == ["device:CPU:0", "device:CPU:1"]
            out = tf.concat(out, axis=-1)
        ours = tf.reduce_sum(out * upstream)
        reference = tf.reduce_sum(_per_column_reference(a, 2) * upstream)
        across = tf.reduce_sum(plain_tf_lrn(a) * upstream)  # One column: the wrong answer here.
    expected = tape.gradient(reference, a).numpy()
    np.testing.assert_allclose(tape.gradient(ours, a).numpy(), expected, rtol=1e-4, atol=1e-7)
    # The check can fail: normalizing across the columns (groups=1) changes the gradient of the
    # channels near the boundary (max 0.18 against a largest entry of 0.58) and misses it.
    wrong = tape.gradient(across, a).numpy()
    assert not np.allclose(wrong, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
def test_execution_modes_agree(mode):
    a = np.random.default_rng(3).uniform(-300, 300, (2, 4, 4, 8)).astype(np.float32)
    layer = LocalResponseNormalization()
    fn = {
        "eager": layer,
        "function": tf.function(layer),
        "jit": tf.function(layer, jit_compile=True),
    }[mode]
    np.testing.assert_allclose(fn(a).numpy(), numpy_lrn(a), rtol=1e-5)


@pytest.mark.parametrize(
    "policy,dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_mixed_precision_is_finite_and_keeps_dtype(mixed_policy, policy, dtype):
    mixed_policy(policy)
    layer = LocalResponseNormalization()
    # 300^2 * 5 overflows float16 (max 65504): the layer must sum squares in float32.
    a = tf.constant(np.full((1, 2, 2, 8), 300.0), dtype)
    for fn in (layer, tf.function(layer, jit_compile=True)):
        out = fn(a)
        assert out.dtype == dtype
        assert np.all(np.isfinite(tf.cast(out, tf.float32).numpy()))
        expected = numpy_lrn(np.full((1, 2, 2, 8), 300.0, np.float32))
        np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), expected, rtol=1e-2)


def test_config_round_trip_and_json():
    layer = LocalResponseNormalization(depth_radius=3, bias=1.0, alpha=2e-4, beta=0.5, groups=2)
    config = layer.get_config()
    assert {k: config[k] for k in ("depth_radius", "bias", "alpha", "beta", "groups")} == dict(
        depth_radius=3, bias=1.0, alpha=2e-4, beta=0.5, groups=2
    )
    clone = LocalResponseNormalization.from_config(config)
    assert clone.get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, LocalResponseNormalization) and revived.depth_radius == 3


def test_compute_output_shape():
    assert LocalResponseNormalization().compute_output_shape((None, 55, 55, 96)) == (
        None,
        55,
        55,
        96,
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth_radius=-1), "depth_radius"),
        (dict(bias=0.0), "bias"),
        (dict(alpha=-1.0), "alpha"),
        (dict(beta=0.0), "beta"),
        (dict(groups=0), "groups"),
        (dict(groups=2, devices=["/cpu:0"]), "devices"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalResponseNormalization(**kwargs)


def test_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="groups=2, input channels=5"):
        LocalResponseNormalization(groups=2)(np.zeros((1, 2, 2, 5), np.float32))


@pytest.mark.parametrize(
    "depth_radius,bias,alpha,beta", [(2, 2.0, 1e-4, 0.75), (1, 1.0, 1e-3, 0.5)]
)
def test_equals_tf_lrn_kernel_forward_and_gradient(depth_radius, bias, alpha, beta):
    """The layer's window-sum implementation against TF's own LRN and LRNGrad kernels."""
    a = tf.constant(np.random.default_rng(5).uniform(-300, 300, (2, 6, 6, 16)), tf.float32)
    layer = LocalResponseNormalization(depth_radius, bias, alpha, beta)
    upstream = tf.constant(np.random.default_rng(6).normal(size=(2, 6, 6, 16)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        ours = layer(a)
        theirs = tf.nn.local_response_normalization(a, depth_radius, bias, alpha, beta)
        loss_ours, loss_theirs = tf.reduce_sum(ours * upstream), tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(loss_ours, a).numpy(), tape.gradient(loss_theirs, a).numpy(),
        rtol=1e-4, atol=1e-7,
    )  # fmt: skip


def test_device_pinned_columns_equal_one_op_columns():
    a = np.random.default_rng(7).uniform(-300, 300, size=(1, 3, 3, 8)).astype(np.float32)
    pinned = LocalResponseNormalization(groups=2, devices=["/cpu:0", "/cpu:1"])(a)
    pinned = tf.concat(pinned, axis=-1).numpy()  # Towers: one tensor per column.
    np.testing.assert_allclose(pinned, LocalResponseNormalization(groups=2)(a).numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
@pytest.mark.parametrize("groups", [1, 2])
def test_relu_inside_equals_relu_before(dtype, groups):
    """relu=True (the model's lrn1/lrn2, ReLU's gradient folded into LRN's) computes the same
    values and input gradients as a ReLU op followed by the plain layer, zeros included."""
    rng = np.random.default_rng(8)
    z = rng.uniform(-300, 300, (2, 5, 5, 16)).astype(np.float32)
    z[0, 0, 0, :4] = 0.0  # ReLU's gradient at exactly 0 is 0, as TF's ReluGrad.
    z = tf.cast(z, dtype)
    upstream = tf.cast(rng.normal(size=z.shape), dtype)
    fused = LocalResponseNormalization(groups=groups, relu=True, dtype=dtype.name)
    plain = LocalResponseNormalization(groups=groups, dtype=dtype.name)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        ours, ref = fused(z), plain(tf.nn.relu(z))
        loss_ours, loss_ref = (
            tf.reduce_sum(tf.cast(v * upstream, tf.float32)) for v in (ours, ref)
        )
    assert ours.dtype == ref.dtype == dtype
    np.testing.assert_array_equal(tf.cast(ours, tf.float32), tf.cast(ref, tf.float32))
    grad_ours, grad_ref = tape.gradient(loss_ours, z), tape.gradient(loss_ref, z)
    np.testing.assert_array_equal(tf.cast(grad_ours, tf.float32), tf.cast(grad_ref, tf.float32))
    assert np.count_nonzero(tf.cast(grad_ours, tf.float32)) > grad_ours.shape.num_elements() // 3
    assert not np.any(tf.cast(grad_ours, tf.float32).numpy()[tf.cast(z, tf.float32).numpy() <= 0])


def test_relu_is_in_the_config():
    layer = LocalResponseNormalization(relu=True)
    assert LocalResponseNormalization.from_config(layer.get_config()).relu is True
    assert LocalResponseNormalization().relu is False


def _traced_ops(fn, *args) -> set[str]:
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


def test_window_sum_form_follows_the_cpu_and_dtype(window_sum_form):
    """float32 on AVX2-only CPUs sums by shifted slices (no convolution forward or backward);
    elsewhere, and in bfloat16, the 0/1 band convolution."""
    slices = window_sum_form == "shifted_slices"
    layer = LocalResponseNormalization(groups=2, relu=True)
    x = tf.TensorSpec((2, 5, 5, 16), tf.float32)

    def forward_and_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return tape.gradient(y, x)

    assert lrn.sums_windows_by_slices(tf.zeros((1, 1, 1, 4))) == slices
    assert not lrn.sums_windows_by_slices(tf.zeros((1, 1, 1, 4), tf.bfloat16))
    assert ("Conv2D" in _traced_ops(forward_and_backward, x)) != slices
