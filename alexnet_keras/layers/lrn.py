"""Local response normalization, the paper's formula (Sec. 3.3)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from alexnet_keras import constants
from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels, the paper's formula (Sec. 3.3).

    b[c] = a[c] / (k + alpha * sum(a[c']^2 for |c' - c| <= depth_radius)) ** beta, summed over
    n = 2 * depth_radius + 1 adjacent channels. With the defaults (n=5, k=2, alpha=1e-4,
    beta=0.75) this is exactly `tf.nn.local_response_normalization(depth_radius=2, bias=2,
    alpha=1e-4, beta=0.75)`: TF, like the paper, does NOT divide alpha by n. Caffe and PyTorch
    do (their `alpha` is the paper's alpha * n), so their published 1e-4 is a different network.

    With `groups > 1` the channels are split into that many columns and each is normalized on its
    own, as on the paper's two GPUs (each GPU only sees its own kernel maps). `groups=1` (the
    default) normalizes across all channels, as Caffe's bvlc_alexnet does. The arithmetic is
    float32 whatever the input dtype (a float16 sum of squares overflows for activations around
    300), and the result comes back in the input dtype.

    With `relu=True` the layer normalizes relu(input), the previous layer's activation: the model
    builds conv1 and conv2 linear and their LRN with it, so a fast kernel can fold ReLU's gradient
    into LRN's (same function, same weights).

    Args:
        depth_radius: channels on each side that enter the sum (n = 2 * depth_radius + 1).
        bias: k.
        alpha: scale of the sum of squares (not divided by n).
        beta: exponent.
        groups: number of independently normalized channel columns.
        relu: whether ReLU is applied to the input first.
        devices: accepted from files saved before 0.2 and not used (placement is outside layers).

    Input shape: `(batch, height, width, channels)`. Output shape: the same, in the input dtype.

    Example:
        >>> layer = LocalResponseNormalization()
        >>> layer(keras.ops.ones((1, 4, 4, 8))).shape
        (1, 4, 4, 8)
    """

    def __init__(
        self,
        depth_radius: int = constants.LRN_DEPTH_RADIUS,
        bias: float = constants.LRN_K,
        alpha: float = constants.LRN_ALPHA,
        beta: float = constants.LRN_BETA,
        groups: int = 1,
        relu: bool = False,
        devices: object = None,
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
        columns.check_legacy_devices(devices, groups)
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.groups = groups
        self.relu = bool(relu)
        # A faster kernel for the same result (`alexnet_keras.kernels`), set outside the layer.
        self.fast_call: Callable | None = None

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"Input channels must be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )

    def call(self, inputs: object) -> object:
        if self.fast_call is not None:
            return self.fast_call(self, inputs)
        parts = columns.split_channels(inputs, self.groups)
        return columns.concat_channels([self.column(part) for part in parts])

    def column(self, x: object) -> object:
        """One column normalized on its own: the formula, with zeros beyond its edge channels.

        The window sums are one product with a 0/1 band: band[j, i] = 1 where channel j is
        within depth_radius of channel i (one op forward and one backward; as shifted slices,
        their gradients made the training step 2.2x slower on a CPU).
        """
        a = ops.cast(ops.relu(x) if self.relu else x, "float32")
        index = np.arange(a.shape[-1])
        band = (np.abs(index[:, None] - index[None, :]) <= self.depth_radius).astype("float32")
        window_sum = ops.matmul(ops.square(a), band)
        b = a / ops.power(self.bias + self.alpha * window_sum, self.beta)
        return ops.cast(b, x.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
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
        )
        return config
