"""Winograd F(2x2, 3x3) convolutions against TF's direct convolution, one group at a time."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras.kernels import winograd


def per_group_conv(x, kernel):
    """Independent reference: TF's direct "same" convolution of each group's channels."""
    groups = x.shape[-1] // kernel.shape[2]
    kernels = tf.split(kernel, groups, axis=-1)
    parts = tf.split(x, groups, axis=-1)
    return tf.concat([tf.nn.conv2d(p, k, 1, "SAME") for p, k in zip(parts, kernels)], axis=-1)


def value_and_grads(conv, x, kernel, upstream):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        loss = tf.reduce_sum(conv(x, kernel) * upstream)
    return (conv(x, kernel), *tape.gradient(loss, [x, kernel]))


def traced_ops(fn, *args):
    """Op types of fn's traced graph, the XLA functions' bodies included."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    ops = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@pytest.mark.parametrize(
    "x_shape, kernel_shape",
    [
        ((2, 13, 13, 8), (3, 3, 8, 6)),  # conv3's 13x13: odd, the last tile half outside.
        ((2, 13, 13, 8), (3, 3, 4, 6)),  # Two groups, as conv4 and conv5.
        ((3, 6, 9, 6), (3, 3, 2, 9)),  # Three groups, even and odd sides, not square.
        ((1, 1, 2, 3), (3, 3, 3, 2)),  # Smaller than a tile.
    ],
)
def test_equals_the_direct_convolution_forward_and_backward(x_shape, kernel_shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=x_shape), tf.float32)
    kernel = tf.constant(rng.normal(size=kernel_shape), tf.float32)
    upstream = tf.constant(rng.normal(size=(*x_shape[:3], kernel_shape[-1])), tf.float32)
    got = value_and_grads(winograd.conv3x3, x, kernel, upstream)
    want = value_and_grads(per_group_conv, x, kernel, upstream)
    for name, g, w in zip(("output", "input gradient", "kernel gradient"), got, want):
        assert g.shape == w.shape, name
        # float32 round-off of a different order of the same sums, relative to the largest value.
        np.testing.assert_allclose(g, w, atol=2e-6 * float(tf.reduce_max(tf.abs(w))), err_msg=name)


def test_alexnet_conv3_shape_in_the_paper_init():
    """conv3 at batch 8 with the paper's N(0, 0.01) kernel: the relative error stays ~1e-6."""
    rng = np.random.default_rng(1)
    x = tf.constant(np.maximum(rng.normal(size=(8, 13, 13, 256)), 0), tf.float32)
    kernel = tf.constant(rng.normal(0, 0.01, size=(3, 3, 256, 384)), tf.float32)
    got, want = winograd.conv3x3(x, kernel), tf.nn.conv2d(x, kernel, 1, "SAME")
    assert float(tf.reduce_max(tf.abs(got - want)) / tf.reduce_max(tf.abs(want))) < 1e-5


def test_uses_batched_matmuls_not_convolutions():
    x, kernel = tf.TensorSpec((2, 13, 13, 8)), tf.TensorSpec((3, 3, 4, 6))
    ops = traced_ops(winograd.conv3x3, x, kernel)
    assert {"BatchMatMulV2"} <= ops and not {"Conv2D", "_FusedConv2D"} & ops


def test_applies_to_static_float32_3x3_convolutions_only():
    """Which convolutions `conv3x3` can run; whether the policy runs them is the policy's (see
    test_kernels.py: the layer under KernelPolicy({"winograd"}))."""
    x, kernel = tf.zeros((128, 13, 13, 8)), tf.zeros((3, 3, 8, 4))
    assert winograd.applies(x, kernel)
    assert winograd.applies(x, tf.zeros((3, 3, 4, 4)))  # Grouped: conv4 and conv5.
    assert not winograd.applies(x, tf.zeros((5, 5, 8, 4)))  # conv2: 5x5.
    # Maps smaller than the paper's 13x13 stay direct (no gain measured on the demo's 3x3).
    assert winograd.MIN_SIZE == 13
    assert not winograd.applies(tf.zeros((128, 12, 13, 8)), kernel)
    assert not winograd.applies(tf.zeros((128, 13, 12, 8)), kernel)
    # bfloat16 stays direct: its tiles would round each transform's sums.
    assert not winograd.applies(tf.cast(x, tf.bfloat16), tf.cast(kernel, tf.bfloat16))

    @tf.function(input_signature=[tf.TensorSpec((None, 13, 13, 8))])  # A serving signature.
    def unknown_batch(x):
        assert not winograd.applies(x, kernel)
        return x

    unknown_batch.get_concrete_function()
