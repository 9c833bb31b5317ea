"""PaperSGD against a NumPy implementation of the paper's update rule (Sec. 5)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

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
