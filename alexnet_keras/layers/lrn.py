"""Local response normalization, the paper's formula (Sec. 3.3)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from alexnet_keras import constants, cpu
from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels, the paper's formula (Sec. 3.3).

    b[c] = a[c] / (k + alpha * sum(a[c']^2 for |c' - c| <= depth_radius)) ** beta, summed over
    n = 2 * depth_radius + 1 adjacent channels. With the defaults (n=5, k=2, alpha=1e-4,
    beta=0.75) this is exactly `tf.nn.local_response_normalization(depth_radius=2, bias=2,
    alpha=1e-4, beta=0.75)`: TF, like the paper, does NOT divide alpha by n. Caffe and PyTorch
    do (their `alpha` is the paper's alpha * n), so their published 1e-4 is a different network.

    The normalization's arithmetic is float32 whatever the input dtype, and the result comes back
    in the input dtype: a float16 sum of squares overflows to inf (NaN downstream) for activations
    around 300, so float16 inputs are normalized in float32; bfloat16 inputs keep their window sum
    in bfloat16 (float32's range, rounded to 8 bits like the activations themselves). So the layer
    is safe under `mixed_float16` and `mixed_bfloat16`.

    With `groups > 1` the channels are split into that many columns and each is normalized on its
    own, as on the paper's two GPUs (each GPU only sees its own kernel maps); with `devices` the
    layer takes and returns a list of per-column tensors, each normalized on its own device.
    `groups=1` (the default) normalizes across all channels, as Caffe's bvlc_alexnet does.

    With `relu=True` the layer normalizes relu(input): the model builds conv1 and conv2 without
    an activation and their LRN with it, so ReLU's gradient is folded into LRN's last backward pass
    instead of a pass of its own over conv1's and conv2's outputs (ReLU gradients were ~3% of a
    bfloat16 step on an AMX CPU). Same function, same weights.

    Args:
        depth_radius: channels on each side that enter the sum (n = 2 * depth_radius + 1).
        bias: k.
        alpha: scale of the sum of squares (not divided by n).
        beta: exponent.
        groups: number of independently normalized channel columns.
        relu: whether ReLU is applied to the input first (the previous layer's activation).
        devices: optional device per column, e.g. `("/gpu:0", "/gpu:1")`.

    Input shape: `(batch, height, width, channels)`. Output shape: the same, in the input dtype.

    Example:
        >>> layer = LocalResponseNormalization()
        >>> layer(tf.ones((1, 4, 4, 8))).shape
        TensorShape([1, 4, 4, 8])
    """

    def __init__(
        self,
        depth_radius: int = constants.LRN_DEPTH_RADIUS,
        bias: float = constants.LRN_K,
        alpha: float = constants.LRN_ALPHA,
        beta: float = constants.LRN_BETA,
        groups: int = 1,
        relu: bool = False,
        devices: Sequence[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(
                "`depth_radius` must be a non-negative integer. "
                f"Received: depth_radius={depth_radius}"
            )
        if bias <= 0:
            raise ValueError(f"`bias` must be positive. Received: bias={bias}")
        if alpha < 0:
            raise ValueError(f"`alpha` must be non-negative. Received: alpha={alpha}")
        if beta <= 0:
            raise ValueError(f"`beta` must be positive. Received: beta={beta}")
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"`groups` must be a positive integer. Received: groups={groups}")
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.groups = groups
        self.relu = bool(relu)
        self.devices = columns.check_devices(devices, groups)

    def build(self, input_shape: tuple | list) -> None:
        input_shape = columns.whole_shape(input_shape)  # Towers pass one shape per column.
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"Input channels must be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )
        self.built = True

    def call(self, inputs: tf.Tensor | list[tf.Tensor]) -> tf.Tensor | list[tf.Tensor]:
        if not self.devices:  # One op for all columns: a block-diagonal window keeps them apart.
            return tf.cast(self._normalize(inputs, self.groups), inputs.dtype)
        parts = columns.as_columns(inputs, self.groups) or columns.split_channels(
            inputs, self.groups
        )
        return [
            columns.on_device(device, lambda x: tf.cast(self._normalize(x, 1), x.dtype), part)
            for device, part in zip(self.devices, parts)
        ]

    def _normalize(self, x: tf.Tensor, groups: int) -> tf.Tensor:
        # float16 squares overflow (and XLA refuses mixed float16/float32): compute in float32.
        native = x if x.dtype in (tf.float32, tf.bfloat16) else tf.cast(x, tf.float32)
        return local_response_normalization(
            native, self.depth_radius, self.bias, self.alpha, self.beta, groups, self.relu
        )

    def compute_output_shape(self, input_shape: tuple | list) -> tuple | list:
        if columns.is_columns_shape(input_shape):
            return [tuple(s) for s in input_shape]
        if self.devices:
            return [(*input_shape[:-1], input_shape[-1] // self.groups)] * self.groups
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
            groups=self.groups,
            relu=self.relu,
            devices=list(self.devices) if self.devices else None,
        )
        return config


def _window(channels: int, depth_radius: int, groups: int, dtype: tf.DType) -> tf.Tensor:
    """[1, 1, C / groups, C] 0/1 kernel of a grouped 1x1 convolution that sums each window.

    Entry [0, 0, j, i] is 1 if channel j (within i's group) is within depth_radius of i. With
    groups=2 the columns never mix, so the grouped convolution does half the work of a
    block-diagonal [C, C] one. Ones are exact in every dtype (alpha is applied in float32).
    """
    per_group = channels // groups
    index = np.arange(per_group)
    band = (np.abs(index[:, None] - index[None, :]) <= depth_radius).astype(np.float32)
    return tf.constant(np.tile(band, (1, groups))[None, None], dtype)


def sums_windows_by_slices(x: tf.Tensor) -> bool:
    """Whether LRN's channel-window sums are XLA loops over shifted slices, not band convolutions.

    On an AVX2 AMD EPYC (Zen 2), float32, batch 128, the slices are the faster form: lrn1's
    forward window sum 59 vs 83 ms, lrn2's 34 vs 72 ms, their backward 80 vs 106 and 51 vs 81 ms
    (this VM's memory is slow, and the convolution adds a pass: squares, then their sum). On an
    AMX Xeon shifted slices were the slower form (issue 15's second session), so CPUs with
    AVX512 and GPUs keep the convolution, as does bfloat16 (its band sum accumulates in float32).
    """
    return x.dtype == tf.float32 and cpu.runs_avx2_kernels()


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
@tf.function(jit_compile=True)
def _relu_square(x: tf.Tensor) -> tf.Tensor:
    """relu(x)^2 in x's dtype, the window sum's input when the layer applies ReLU."""
    return tf.square(tf.nn.relu(x))


def _shifted_window_sum(v: tf.Tensor, depth_radius: int, groups: int) -> tf.Tensor:
    """S(v) as 2 * depth_radius + 1 shifted slices of v's zero-padded channels, per group."""
    per_group = v.shape[-1] // groups
    padded = tf.pad(
        tf.reshape(v, [-1, groups, per_group]), [[0, 0], [0, 0], [depth_radius, depth_radius]]
    )
    total = padded[..., :per_group]
    for shift in range(1, 2 * depth_radius + 1):
        total += padded[..., shift : shift + per_group]
    return tf.reshape(total, tf.shape(v))


@tf.function(jit_compile=True)
def _squares_window_sum(x: tf.Tensor, depth_radius: int, groups: int, relu: bool) -> tf.Tensor:
    """S(x^2) (or S(relu(x)^2)) in one loop: the slices form of the forward's window sum."""
    return _shifted_window_sum(tf.square(tf.nn.relu(x) if relu else x), depth_radius, groups)


@tf.function(jit_compile=True)
def _backward_window_sum(
    upstream: tf.Tensor,
    y: tf.Tensor,
    window_sum: tf.Tensor,
    bias: float,
    alpha: float,
    depth_radius: int,
    groups: int,
) -> tf.Tensor:
    """S(g * y / d) in one loop: the slices form of `_backward_inner` and its window sum."""
    d, _ = _denominator(window_sum, bias, alpha, 1.0)
    return _shifted_window_sum(upstream * y / d, depth_radius, groups)


@tf.function(jit_compile=True)
def _scale_forward(
    x: tf.Tensor, window_sum: tf.Tensor, bias: float, alpha: float, beta: float, relu: bool
) -> tf.Tensor:
    """y = a * d^-beta for a = x (or relu(x)), computed in float32 and returned in x's dtype."""
    _, scale = _denominator(window_sum, bias, alpha, beta)
    a = tf.cast(x, tf.float32)
    return tf.cast((tf.nn.relu(a) if relu else a) * scale, x.dtype)


@tf.function(jit_compile=True)
def _backward_inner(
    upstream: tf.Tensor, y: tf.Tensor, window_sum: tf.Tensor, bias: float, alpha: float
) -> tf.Tensor:
    """g * y / d, the term the backward window sum runs over (float32 inside)."""
    d, _ = _denominator(window_sum, bias, alpha, 1.0)
    g, y = tf.cast(upstream, tf.float32), tf.cast(y, tf.float32)
    return tf.cast(g * y / d, upstream.dtype)


@tf.function(jit_compile=True)
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
    """g * d^-beta - 2 alpha beta * a * S(g * y / d) for a = x (float32 inside); with relu,
    a = relu(x) and the result is ReLU's gradient too: zero where x <= 0, as TF's ReluGrad."""
    _, scale = _denominator(window_sum, bias, alpha, beta)
    g, a, b = (tf.cast(v, tf.float32) for v in (upstream, x, back))
    gradient = g * scale - 2.0 * alpha * beta * a * b  # Where x > 0, a = relu(x) = x.
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
    """The paper's LRN on NHWC `x` (float32 or bfloat16), equal to TF's LRN kernel (of relu(x)
    with `relu`, ReLU's gradient folded into the last backward pass).

    The sum of squares over the channel window is a grouped 1x1 convolution with a 0/1 band in
    x's dtype (bfloat16 has float32's range, so its squares cannot overflow; the convolution
    accumulates in float32), or, where `sums_windows_by_slices` says that is faster, shifted
    slices in the XLA loop that squares; the elementwise rest of each pass is one XLA-fused
    function computing in float32. The gradient is written out: with d = k + alpha * S(x^2) and
    y = x * d^-beta, dL/dx = g * d^-beta - 2 * alpha * beta * x * S(g * y / d), S the
    (symmetric) window sum. Under mixed bfloat16 this keeps LRN's activations in bfloat16 and
    saves the float32 round trips (casts were 6% of the step on an AMX CPU, tools/benchmark.py).
    """
    by_slices = sums_windows_by_slices(x)
    window = None if by_slices else _window(x.shape[-1], depth_radius, groups, x.dtype)

    @tf.custom_gradient
    def lrn(x: tf.Tensor) -> tuple:
        if by_slices:
            window_sum = _squares_window_sum(x, depth_radius, groups, relu)
        else:
            squares = _relu_square(x) if relu else tf.square(x)
            window_sum = tf.nn.conv2d(squares, window, strides=1, padding="VALID")
        y = _scale_forward(x, window_sum, bias, alpha, beta, relu)

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            if by_slices:
                back = _backward_window_sum(
                    upstream, y, window_sum, bias, alpha, depth_radius, groups
                )
            else:
                inner = _backward_inner(upstream, y, window_sum, bias, alpha)
                back = tf.nn.conv2d(inner, window, strides=1, padding="VALID")
            return _backward_outer(upstream, window_sum, x, back, bias, alpha, beta, relu)

        return y, grad

    return lrn(x)
