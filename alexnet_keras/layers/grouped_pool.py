"""Max pooling per channel column, for the paper's two-device layout (Sec. 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class GroupedMaxPool2D(keras.layers.Layer):
    """Max pooling applied per channel column, each column's op pinned to its own device.

    Pooling is per channel, so the result equals `keras.layers.MaxPooling2D`; the split only
    matters for placement: it keeps each of the paper's two GPU columns on its own device
    between conv1 and conv3 (Sec. 3.2), instead of gathering both columns on one device.

    Args:
        pool_size: int or pair.
        strides: int or pair.
        padding: `"valid"` or `"same"`.
        groups: number of channel columns.
        devices: optional device per column.

    Input shape: `(batch, height, width, channels)`.
    Output shape: `(batch, new_height, new_width, channels)`.

    Example:
        >>> GroupedMaxPool2D(3, 2)(tf.zeros((1, 55, 55, 96))).shape
        TensorShape([1, 27, 27, 96])
    """

    def __init__(
        self,
        pool_size: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 2,
        padding: str = "valid",
        groups: int = 1,
        devices: Sequence[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"`groups` must be a positive integer. Received: groups={groups}")
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: padding={padding}")
        self.pool_size = columns.pair(pool_size, "pool_size")
        self.strides = columns.pair(strides, "strides")
        self.padding = padding
        self.groups = groups
        self.devices = columns.check_devices(devices, groups)

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"Input channels must be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )
        self.built = True

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if not self.devices:  # Pooling is per channel: one op equals the per-column ones.
            return tf.nn.max_pool2d(inputs, self.pool_size, self.strides, self.padding.upper())
        outputs = []
        for g, column in enumerate(columns.split_channels(inputs, self.groups)):
            with tf.device(self.devices[g]):
                outputs.append(
                    tf.nn.max_pool2d(column, self.pool_size, self.strides, self.padding.upper())
                )
        return outputs[0] if self.groups == 1 else tf.concat(outputs, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        height = columns.conv_output_length(
            input_shape[1], self.pool_size[0], self.strides[0], self.padding
        )
        width = columns.conv_output_length(
            input_shape[2], self.pool_size[1], self.strides[1], self.padding
        )
        return (input_shape[0], height, width, input_shape[3])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            pool_size=self.pool_size,
            strides=self.strides,
            padding=self.padding,
            groups=self.groups,
            devices=list(self.devices) if self.devices else None,
        )
        return config
