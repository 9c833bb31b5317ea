"""layers.Dense against keras.layers.Dense: same outputs, gradients, config and weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras import cpu
from alexnet_keras.layers import Dense


@pytest.mark.parametrize("activation", [None, "relu"])
def test_matches_keras_dense_forward_and_gradients(activation):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(5, 37)), tf.float32)
    ours, ref = Dense(11, activation=activation), keras.layers.Dense(11, activation=activation)
    ours.build(x.shape), ref.build(x.shape)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.normal(size=a.shape).astype(np.float32)
        a.assign(value), b.assign(value)
    upstream = tf.constant(rng.normal(size=(5, 11)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss_ours = tf.reduce_sum(ours(x) * upstream)
        loss_ref = tf.reduce_sum(ref(x) * upstream)
    np.testing.assert_allclose(loss_ours.numpy(), loss_ref.numpy(), rtol=1e-5)
    for g_ours, g_ref in zip(
        tape.gradient(loss_ours, [x, *ours.trainable_weights]),
        tape.gradient(loss_ref, [x, *ref.trainable_weights]),
    ):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-5, atol=1e-5)


def test_bfloat16_policy_computes_in_bfloat16_with_float32_weights():
    layer = Dense(4, dtype="mixed_bfloat16")
    out = layer(tf.ones((2, 3)))
    assert out.dtype == tf.bfloat16 and layer.kernel.dtype == "float32"
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(tf.ones((2, 3))), tf.float32))
    assert all(g.dtype == tf.float32 for g in tape.gradient(loss, layer.trainable_weights))


def test_config_round_trip_and_rank_check():
    layer = Dense(7, activation="relu", name="fc6")
    assert Dense.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="2D inputs"):
        Dense(3)(tf.zeros((2, 4, 5)))


def _traced_ops(fn, *specs) -> set[str]:
    return {op.type for op in tf.function(fn).get_concrete_function(*specs).graph.get_operations()}


def test_padded_kernel_matmul_equals_the_plain_one(monkeypatch):
    """Where oneDNN's AVX2 matmul is slow for 4 KiB kernel rows, `matmul` pads the kernel's
    columns: the traced forward has the Pad, and output and both gradients equal TF's own
    x @ W and its gradients (TF's gradient of the plain matmul, no custom code)."""
    from alexnet_keras.layers import dense

    monkeypatch.setattr(cpu, "runs_avx2_kernels", lambda: True)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(32, 96)), tf.float32)
    kernel = tf.constant(rng.normal(size=(96, 1024)), tf.float32)
    upstream = tf.constant(rng.normal(size=(32, 1024)), tf.float32)
    assert dense.pads_kernel_columns(x, kernel)
    assert "Pad" in _traced_ops(dense.matmul, x, kernel)

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = fn(x, kernel)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, kernel])]

    for ours, ref in zip(loss_and_grads(dense.matmul), loss_and_grads(tf.matmul), strict=True):
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("transposes", [True, False])
def test_both_input_gradient_forms_equal_tfs(monkeypatch, transposes):
    """(W @ g^T)^T (most CPUs) and g @ W^T (AVX2 float32) both give TF's gradients; the traced
    gradient has the Transpose only in the first form."""
    from alexnet_keras.layers import dense

    monkeypatch.setattr(dense, "transposes_input_gradient", lambda kernel: transposes)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(16, 96)), tf.float32)
    kernel = tf.constant(rng.normal(size=(96, 40)), tf.float32)
    upstream = tf.constant(rng.normal(size=(16, 40)), tf.float32)

    def grads(fn, x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = tf.reduce_sum(fn(x, kernel) * upstream)
        return tape.gradient(loss, [x, kernel])

    for ours, ref in zip(grads(dense.matmul, x, kernel), grads(tf.matmul, x, kernel), strict=True):
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)
    traced = _traced_ops(lambda x, kernel: grads(dense.matmul, x, kernel), x, kernel)
    assert ("Transpose" in traced) == transposes


def test_input_gradient_form_follows_the_cpu(monkeypatch):
    from alexnet_keras.layers import dense

    monkeypatch.setattr(cpu, "runs_avx2_kernels", lambda: False)  # AVX512, AMX, GPUs.
    assert dense.transposes_input_gradient(tf.zeros((4, 4)))
    monkeypatch.setattr(cpu, "runs_avx2_kernels", lambda: True)
    assert not dense.transposes_input_gradient(tf.zeros((4, 4)))
    assert dense.transposes_input_gradient(tf.zeros((4, 4), tf.bfloat16))  # Unmeasured.


def test_kernel_columns_are_padded_only_where_that_was_measured_faster(monkeypatch):
    from alexnet_keras.layers import dense

    x, kernel = tf.zeros((128, 64)), tf.zeros((64, 2048))
    monkeypatch.setattr(cpu, "runs_avx2_kernels", lambda: False)  # AVX512, AMX, GPUs: unmeasured.
    assert not dense.pads_kernel_columns(x, kernel)
    monkeypatch.setattr(cpu, "runs_avx2_kernels", lambda: True)
    assert dense.pads_kernel_columns(x, kernel)
    assert not dense.pads_kernel_columns(x, tf.zeros((64, 1000)))  # fc8: rows not 4 KiB.
    assert not dense.pads_kernel_columns(tf.zeros((8, 64)), kernel)  # Small batch: the copy loses.
    assert not dense.pads_kernel_columns(x, tf.zeros((64, 2048), tf.bfloat16))
    unknown_batch = tf.TensorSpec((None, 64), tf.float32)  # A serving signature's batch.
    assert "Pad" not in _traced_ops(dense.matmul, unknown_batch, tf.TensorSpec((64, 2048)))
