"""The fully connected layers (fc6-fc8) with a faster input gradient on CPU."""

from __future__ import annotations

import keras
import tensorflow as tf


@tf.custom_gradient
def matmul(x: tf.Tensor, kernel: tf.Tensor) -> tuple:
    """x @ kernel for x [batch, in] and kernel [in, out], with the input gradient as (W @ g^T)^T.

    TF's own gradient computes g @ W^T with `MatMul(transpose_b=True)`, which on CPU runs 3.4x
    slower at fc6's shape than `MatMul(W, g, transpose_b=True)` plus a transpose of the small
    [in, batch] result (70 vs 21 ms at batch 32 on this machine, tools/benchmark.py); on GPUs the
    two cost the same. The kernel gradient is TF's.
    """

    def grad(upstream: tf.Tensor) -> tuple:
        inputs_grad = tf.transpose(tf.matmul(kernel, upstream, transpose_b=True))
        kernel_grad = tf.matmul(x, upstream, transpose_a=True)
        return inputs_grad, kernel_grad

    return tf.matmul(x, kernel), grad


@keras.saving.register_keras_serializable(package="alexnet_keras")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` for 2D inputs whose backward pass uses `matmul` above.

    Same weights, arguments and config as Keras's layer (checkpoints are interchangeable).

    Input shape: `(batch, input_dim)`. Output shape: `(batch, units)`.
    """

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 2:
            raise ValueError(f"Dense expects 2D inputs (batch, features). Received: {input_shape}")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        outputs = matmul(inputs, tf.cast(self.kernel, self.compute_dtype))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, self.compute_dtype))
        return self.activation(outputs)
