"""LRN with its gradient written out: `LocalResponseNormalization`'s result in fewer passes.

The reference layer sums each channel window as 2r + 1 shifted slices and lets TF differentiate
them (a slice, pad and add per term, forward and backward, in float32). Here the window sum is
a grouped 1x1 convolution with a 0/1 band (exact in bfloat16, which has float32's range; the
convolution accumulates in float32), the elementwise rest of each pass is one XLA-fused
function computing in float32, and the gradient is the closed form: with d = k + alpha * S(a^2)
and b = a * d^-beta,

    dL/da = g * d^-beta - 2 * alpha * beta * a * S(g * b / d),   S the (symmetric) window sum.

With the layer's `relu`, a = relu(x) and ReLU's gradient is folded into the last pass. Under mixed
bfloat16 the activations stay bfloat16 between the passes (no float32 round trips).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def fused_lrn(layer: object, inputs: tf.Tensor) -> tf.Tensor:
    """`LocalResponseNormalization.call` (same arguments, same result within float32 rounding)."""
    x = inputs if inputs.dtype in (tf.float32, tf.bfloat16) else tf.cast(inputs, tf.float32)
    y = local_response_normalization(
        x, layer.depth_radius, layer.bias, layer.alpha, layer.beta, layer.groups, layer.relu
    )
    return tf.cast(y, inputs.dtype)


def _window(channels: int, depth_radius: int, groups: int, dtype: tf.DType) -> tf.Tensor:
    """[1, 1, C / groups, C] 0/1 kernel of a grouped 1x1 convolution that sums each window.

    Entry [0, 0, j, i] is 1 if channel j (within i's group) is within depth_radius of i. With
    groups=2 the columns never mix, and the grouped convolution does half the work of a
    block-diagonal [C, C] one.
    """
    per_group = channels // groups
    index = np.arange(per_group)
    band = (np.abs(index[:, None] - index[None, :]) <= depth_radius).astype(np.float32)
    return tf.constant(np.tile(band, (1, groups))[None, None], dtype)


def _denominator(window_sum: tf.Tensor, bias: float, alpha: float, beta: float) -> tuple:
    """(d, d^-beta) in float32 for d = bias + alpha * window_sum."""
    d = bias + alpha * tf.cast(window_sum, tf.float32)
    if beta == 0.75:  # The paper's exponent: d^-0.75 = d^-0.5 * d^-0.25, no pow needed.
        scale = tf.math.rsqrt(d)
        return d, scale * tf.sqrt(scale)
    return d, tf.pow(d, -beta)


# Each pass is one XLA loop with one output: on CPU every extra output of a fused loop cost
# another pass (LRN1 at batch 128: 35 ms for y alone, 129 ms for y, d^-beta and d), so the
# backward recomputes d from the saved window sum instead of reading stored copies.
@tf.function(jit_compile=True, autograph=False)
def _relu_square(x: tf.Tensor) -> tf.Tensor:
    return tf.square(tf.nn.relu(x))


@tf.function(jit_compile=True, autograph=False)
def _scale_forward(
    x: tf.Tensor, window_sum: tf.Tensor, bias: float, alpha: float, beta: float, relu: bool
) -> tf.Tensor:
    """b = a * d^-beta for a = x (or relu(x)), computed in float32, returned in x's dtype."""
    _, scale = _denominator(window_sum, bias, alpha, beta)
    a = tf.cast(x, tf.float32)
    return tf.cast((tf.nn.relu(a) if relu else a) * scale, x.dtype)


@tf.function(jit_compile=True, autograph=False)
def _backward_inner(
    upstream: tf.Tensor, y: tf.Tensor, window_sum: tf.Tensor, bias: float, alpha: float
) -> tf.Tensor:
    """g * b / d, the term the backward window sum runs over (float32 inside)."""
    d, _ = _denominator(window_sum, bias, alpha, 1.0)
    g, y = tf.cast(upstream, tf.float32), tf.cast(y, tf.float32)
    return tf.cast(g * y / d, upstream.dtype)


@tf.function(jit_compile=True, autograph=False)
def _backward_outer(
    upstream: tf.Tensor,
    window_sum: tf.Tensor,
    x: tf.Tensor,
    back: tf.Tensor,
    bias: float,
    alpha: float,
    beta: float,
    relu: bool,
) -> tf.Tensor:
    """g * d^-beta - 2 alpha beta * a * S(g * b / d) (float32 inside); with relu, zero where
    x <= 0, as TF's ReluGrad."""
    _, scale = _denominator(window_sum, bias, alpha, beta)
    g, a, s = (tf.cast(v, tf.float32) for v in (upstream, x, back))
    gradient = g * scale - 2.0 * alpha * beta * a * s  # Where x > 0, a = relu(x) = x.
    if relu:
        gradient = tf.where(a > 0, gradient, 0.0)
    return tf.cast(gradient, upstream.dtype)


def local_response_normalization(
    x: tf.Tensor,
    depth_radius: int,
    bias: float,
    alpha: float,
    beta: float,
    groups: int = 1,
    relu: bool = False,
) -> tf.Tensor:
    """The paper's LRN of NHWC `x` (float32 or bfloat16; of relu(x) with `relu`), per group."""
    window = _window(x.shape[-1], depth_radius, groups, x.dtype)

    @tf.custom_gradient
    def lrn(x: tf.Tensor) -> tuple:
        squares = _relu_square(x) if relu else tf.square(x)
        window_sum = tf.nn.conv2d(squares, window, strides=1, padding="VALID")
        y = _scale_forward(x, window_sum, bias, alpha, beta, relu)

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            inner = _backward_inner(upstream, y, window_sum, bias, alpha)
            back = tf.nn.conv2d(inner, window, strides=1, padding="VALID")
            return _backward_outer(upstream, window_sum, x, back, bias, alpha, beta, relu)

        return y, grad

    return lrn(x)


def portable_lrn(layer: object, inputs: tf.Tensor) -> tf.Tensor:
    """`LocalResponseNormalization.call` in plain TF ops: what a SavedModel for a stock TF Serving
    holds (no JIT; CPU and GPU kernels; one convolution per column).

    Each column's window sums are a 1x1 convolution with a 0/1 band scaled by alpha, k is added
    by BiasAdd, and d^-0.75 is rsqrt(d) * sqrt(rsqrt(d)). In float32 whatever the input's dtype,
    as the reference (1e-6 relative): a bfloat16 export casts in and out, since CPU elementwise
    ops on bfloat16 took ~3x their float32 time (BUILD_NOTES, "Export and serving").
    """
    x = tf.cast(inputs, tf.float32)
    a = tf.nn.relu(x) if layer.relu else x
    columns = tf.split(a, layer.groups, axis=-1) if layer.groups > 1 else [a]
    per_column = columns[0].shape[-1]
    window = _window(per_column, layer.depth_radius, 1, tf.float32) * layer.alpha
    k = tf.fill([per_column], tf.constant(layer.bias, tf.float32))
    outputs = []
    for column in columns:
        d = tf.nn.bias_add(tf.nn.conv2d(tf.square(column), window, 1, "VALID"), k)
        if layer.beta == 0.75:
            scale = tf.math.rsqrt(d)
            scale = scale * tf.sqrt(scale)
        else:
            scale = tf.pow(d, -layer.beta)
        outputs.append(column * scale)
    y = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=-1)
    return tf.cast(y, inputs.dtype)
