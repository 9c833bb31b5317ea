"""PaperSGD against a NumPy implementation of the paper's update rule (Sec. 5)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras.training import keras_internals
from alexnet_keras.training.optimizer import PaperSGD


def numpy_paper_steps(w, grads, lr, momentum, decay):
    """v <- m*v - decay*lr*w - lr*g; w <- w + v, straight from the paper."""
    v = np.zeros_like(w)
    for g in grads:
        v = momentum * v - decay * lr * w - lr * g
        w = w + v
    return w


def test_first_steps_match_numpy_update_rule():
    rng = np.random.default_rng(0)
    kernel0 = rng.normal(size=(3, 4)).astype(np.float64)
    bias0 = rng.normal(size=(4,)).astype(np.float64)
    layer = keras.layers.Dense(4, name="fc")
    layer.build((None, 3))
    layer.kernel.assign(kernel0)
    layer.bias.assign(bias0)
    optimizer = PaperSGD(learning_rate=0.01, momentum=0.9, coupled_weight_decay=5e-4)
    kernel_grads = [rng.normal(size=(3, 4)) for _ in range(4)]
    bias_grads = [rng.normal(size=(4,)) for _ in range(4)]
    for gk, gb in zip(kernel_grads, bias_grads):
        optimizer.apply_gradients(
            [(tf.constant(gk, tf.float32), layer.kernel), (tf.constant(gb, tf.float32), layer.bias)]
        )
    expected_kernel = numpy_paper_steps(kernel0, kernel_grads, 0.01, 0.9, 5e-4)
    expected_bias = numpy_paper_steps(bias0, bias_grads, 0.01, 0.9, 0.0)  # Biases: no decay.
    np.testing.assert_allclose(layer.kernel.numpy(), expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), expected_bias, rtol=1e-5, atol=1e-6)


def test_decay_is_inside_the_momentum_not_decoupled():
    """With a zero gradient the decay still accumulates in v: w1 = w0(1 - lr*d), w2 adds 0.9 v1."""
    var = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    optimizer = PaperSGD(learning_rate=0.1, momentum=0.9, coupled_weight_decay=0.5)
    for _ in range(2):
        optimizer.apply_gradients([(tf.zeros((2, 2)), var)])
    v1 = -0.5 * 0.1 * 1.0
    w1 = 1.0 + v1
    v2 = 0.9 * v1 - 0.5 * 0.1 * w1
    np.testing.assert_allclose(var.numpy(), np.full((2, 2), w1 + v2), rtol=1e-6)


def test_rejects_decoupled_weight_decay_and_round_trips():
    with pytest.raises(ValueError, match="weight_decay=0.1"):
        PaperSGD(weight_decay=0.1)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        PaperSGD(coupled_weight_decay=-1.0)
    config = PaperSGD(coupled_weight_decay=1e-3).get_config()
    assert PaperSGD.from_config(config).coupled_weight_decay == 1e-3


def test_the_private_keras_api_it_relies_on_still_behaves(monkeypatch):
    """keras_internals pins Keras 3.15's private optimizer API: `_get_variable_index` finds a
    variable built with the optimizer (also as the backend's variable), and `apply` passes the
    gradients through `_all_reduce_sum_gradients`: unchanged with one replica, summed in
    float32 over two (MirroredStrategy on the two logical CPUs)."""
    a, b = keras.Variable(np.ones(2, np.float32), name="a"), keras.Variable([3.0], name="b")
    optimizer = PaperSGD(0.1, momentum=0.0, coupled_weight_decay=0.0)
    optimizer.build([a, b])
    assert keras_internals.variable_index(optimizer, b) == 1
    assert keras_internals.variable_index(optimizer, b.value) == 1  # What update_step receives.
    seen = []
    original = keras_internals.GradientReduction._all_reduce_sum_gradients

    def spy(self, grads_and_vars):
        reduced = original(self, grads_and_vars)
        seen.append((list(grads_and_vars), reduced))
        return reduced

    monkeypatch.setattr(keras_internals.GradientReduction, "_all_reduce_sum_gradients", spy)
    grad = tf.constant([1.0, 2.0])
    optimizer.apply([grad, tf.constant([0.5])], [a, b])
    assert seen and seen[0][1][0][0] is grad  # One replica: the very same tensors.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        w = keras.Variable(np.zeros(2, np.float32), name="w")
        mirrored = PaperSGD(1.0, momentum=0.0, coupled_weight_decay=0.0)
        mirrored.build([w])

    @tf.function
    def step():
        g = tf.cast(tf.fill([2], 1.0), tf.bfloat16)
        mirrored.apply([g], [w])

    strategy.run(step)
    # Each replica's gradient of ones, summed over the two replicas: w = 0 - 1.0 * 2.
    for copy in strategy.experimental_local_results(w.value):
        np.testing.assert_array_equal(copy.numpy(), [-2.0, -2.0])
    assert any(reduced[0][0].dtype == tf.float32 for _, reduced in seen[1:])
