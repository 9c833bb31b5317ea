"""LocalResponseNormalization against a NumPy evaluation of the paper's formula (Sec. 3.3) and
TensorFlow's own LRN and LRNGrad kernels."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras.layers import LocalResponseNormalization


def numpy_lrn(a, depth_radius=2, k=2.0, alpha=1e-4, beta=0.75):
    """Sec. 3.3: b[c] = a[c] / (k + alpha * sum_{|c'-c|<=r} a[c']^2) ** beta (alpha not / n)."""
    a = a.astype(np.float64)
    channels = a.shape[-1]
    out = np.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - depth_radius), min(channels, c + depth_radius + 1)
        out[..., c] = a[..., c] / (k + alpha * np.sum(a[..., lo:hi] ** 2, axis=-1)) ** beta
    return out


def tf_lrn_per_column(a, groups, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75):
    """TF's LRN kernel (and, under a tape, its LRNGrad kernel) on each column alone."""
    return tf.concat(
        [
            tf.nn.local_response_normalization(column, depth_radius, bias, alpha, beta)
            for column in tf.split(a, groups, axis=-1)
        ],
        axis=-1,
    )


def _activations(seed, shape):
    """Activations of conv1's size (|a| up to 300), where the sum of squares matters."""
    return np.random.default_rng(seed).uniform(-300, 300, shape).astype(np.float32)


@pytest.mark.parametrize("depth_radius", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 5, 5, 8), (1, 3, 7, 96), (3, 2, 2, 5)])
def test_matches_numpy_formula(depth_radius, shape):
    a = _activations(depth_radius, shape)
    layer = LocalResponseNormalization(depth_radius=depth_radius)
    out = layer(a)
    assert out.shape == shape and layer.compute_output_shape(shape) == shape
    np.testing.assert_allclose(out.numpy(), numpy_lrn(a, depth_radius), rtol=1e-5)


@pytest.mark.parametrize("groups", [2, 3])
def test_groups_normalize_each_column_alone(groups):
    a = _activations(0, (2, 4, 4, 12))
    expected = np.concatenate([numpy_lrn(c) for c in np.split(a, groups, axis=-1)], axis=-1)
    actual = LocalResponseNormalization(groups=groups)(a).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    # The channels each side of a column boundary see fewer neighbours than in one column, so
    # the one-column result differs there (the check can fail).
    boundary = 12 // groups
    one_column = LocalResponseNormalization()(a).numpy()
    for c in (boundary - 1, boundary):
        assert not np.allclose(one_column[..., c], expected[..., c], rtol=1e-5), c


@pytest.mark.parametrize(
    "depth_radius,bias,alpha,beta", [(2, 2.0, 1e-4, 0.75), (1, 1.0, 1e-3, 0.5)]
)
def test_equals_tf_lrn_kernel_forward_and_gradient(depth_radius, bias, alpha, beta):
    """One column: TF's LRN kernel and, for the input gradient, its LRNGrad kernel."""
    a = tf.constant(_activations(5, (2, 6, 6, 16)))
    upstream = tf.constant(np.random.default_rng(6).normal(size=a.shape), tf.float32)
    layer = LocalResponseNormalization(depth_radius, bias, alpha, beta)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        ours = layer(a)
        theirs = tf_lrn_per_column(a, 1, depth_radius, bias, alpha, beta)
        loss_ours, loss_theirs = tf.reduce_sum(ours * upstream), tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(loss_ours, a).numpy(), tape.gradient(loss_theirs, a).numpy(),
        rtol=1e-4, atol=1e-7,
    )  # fmt: skip


def test_two_column_gradient_equals_tf_lrn_grad_per_column():
    a = tf.constant(_activations(8, (2, 3, 3, 16)))
    upstream = tf.constant(np.random.default_rng(9).normal(size=a.shape), tf.float32)
    layer = LocalResponseNormalization(groups=2)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        ours = tf.reduce_sum(layer(a) * upstream)
        reference = tf.reduce_sum(tf_lrn_per_column(a, 2) * upstream)
        across = tf.reduce_sum(tf_lrn_per_column(a, 1) * upstream)  # The wrong answer here.
    expected = tape.gradient(reference, a).numpy()
    np.testing.assert_allclose(tape.gradient(ours, a).numpy(), expected, rtol=1e-4, atol=1e-7)
    # The check can fail: normalizing across the columns changes the gradient near the boundary.
    assert not np.allclose(tape.gradient(across, a).numpy(), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("groups", [1, 2])
def test_execution_modes_agree(mode, groups):
    a = _activations(3, (2, 4, 4, 8))
    layer = LocalResponseNormalization(groups=groups)
    fn = {
        "eager": layer,
        "function": tf.function(layer),
        "jit": tf.function(layer, jit_compile=True),
    }[mode]
    expected = np.concatenate([numpy_lrn(c) for c in np.split(a, groups, axis=-1)], axis=-1)
    np.testing.assert_allclose(fn(a).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "policy,dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_mixed_precision_is_finite_and_keeps_dtype(mixed_policy, policy, dtype):
    mixed_policy(policy)
    layer = LocalResponseNormalization()
    # 300^2 * 5 overflows float16 (max 65504): the layer must sum squares in float32.
    a = np.full((1, 2, 2, 8), 300.0, np.float32)
    expected = numpy_lrn(a)
    for fn in (layer, tf.function(layer), tf.function(layer, jit_compile=True)):
        out = fn(tf.constant(a, dtype))
        assert out.dtype == dtype
        values = tf.cast(out, tf.float32).numpy()
        assert np.all(np.isfinite(values))
        np.testing.assert_allclose(values, expected, rtol=1e-2)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
@pytest.mark.parametrize("groups", [1, 2])
def test_relu_inside_equals_relu_before(dtype, groups):
    """relu=True (the model's lrn1/lrn2) computes the same values and input gradients as a ReLU
    op followed by the plain layer (itself checked against TF's kernels above), zeros included."""
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
    grad_ours = tf.cast(tape.gradient(loss_ours, z), tf.float32).numpy()
    grad_ref = tf.cast(tape.gradient(loss_ref, z), tf.float32).numpy()
    np.testing.assert_array_equal(grad_ours, grad_ref)
    assert np.count_nonzero(grad_ours) > grad_ours.size // 3
    assert not np.any(grad_ours[tf.cast(z, tf.float32).numpy() <= 0])
    assert not np.any(tf.cast(ours, tf.float32).numpy() < 0)


ARGUMENTS = dict(depth_radius=3, bias=1.0, alpha=2e-4, beta=0.5, groups=2, relu=True)


def test_config_round_trip_and_json():
    layer = LocalResponseNormalization(**ARGUMENTS, name="lrn1")
    config = layer.get_config()
    assert {k: config[k] for k in ARGUMENTS} == ARGUMENTS
    assert "devices" not in config and "fast_call" not in config
    assert LocalResponseNormalization.from_config(config).get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, LocalResponseNormalization) and revived.get_config() == config
    defaults = LocalResponseNormalization()
    assert (defaults.depth_radius, defaults.bias, defaults.alpha, defaults.beta) == (
        2, 2.0, 1e-4, 0.75,
    )  # fmt: skip
    assert defaults.groups == 1 and defaults.relu is False and not defaults.weights


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((3, 3, 8))
    model = keras.Model(inputs, LocalResponseNormalization(**ARGUMENTS)(inputs))
    model.save(tmp_path / "lrn.keras")
    reloaded = keras.saving.load_model(tmp_path / "lrn.keras")
    assert reloaded.layers[-1].get_config() == model.layers[-1].get_config()
    a = _activations(4, (2, 3, 3, 8))
    np.testing.assert_array_equal(reloaded(a).numpy(), model(a).numpy())


def test_legacy_devices_config_loads_and_computes_the_same():
    """Files saved before 0.2 carry `devices` (the layer placed its own columns then)."""
    layer = LocalResponseNormalization(groups=2)
    legacy = dict(layer.get_config(), devices=["/cpu:0", "/cpu:1"])
    revived = LocalResponseNormalization.from_config(legacy)
    assert "devices" not in revived.get_config()
    a = _activations(7, (1, 3, 3, 8))
    np.testing.assert_array_equal(revived(a).numpy(), layer(a).numpy())


def test_fast_call_is_an_unsaved_switch():
    layer = LocalResponseNormalization()
    a = _activations(2, (1, 2, 2, 4))
    assert layer.fast_call is None
    calls = []
    layer.fast_call = lambda owner, x: calls.append(owner) or tf.zeros_like(x)
    assert not np.any(layer(a).numpy()) and calls == [layer]
    assert LocalResponseNormalization.from_config(layer.get_config()).fast_call is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth_radius=-1), "Received: depth_radius=-1"),
        (dict(depth_radius=2.0), "depth_radius"),
        (dict(bias=0.0), "Received: bias=0.0"),
        (dict(alpha=-1.0), "Received: alpha=-1.0"),
        (dict(beta=0.0), "Received: beta=0.0"),
        (dict(groups=0), "Received: groups=0"),
        (dict(groups=2, devices=["/cpu:0"]), r"one device per group \(2\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalResponseNormalization(**kwargs)


def test_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="groups=2, input channels=5"):
        LocalResponseNormalization(groups=2)(np.zeros((1, 2, 2, 5), np.float32))
