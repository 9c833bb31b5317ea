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
    matters for placement: with `devices` the layer takes and returns a list of per-column tensors
    and pools each on its own device, so between conv1 and conv3 a column never leaves its device
    (Sec. 3.2).

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
        if not self.devices:  # Pooling is per channel: one op equals the per-column ones.
            return self._pool(inputs)
        parts = columns.as_columns(inputs, self.groups) or columns.split_channels(
            inputs, self.groups
        )
        return [columns.on_device(d, self._pool, part) for d, part in zip(self.devices, parts)]

    def _pool(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.max_pool2d(x, self.pool_size, self.strides, self.padding.upper())

    def compute_output_shape(self, input_shape: tuple | list) -> tuple | list:
        if columns.is_columns_shape(input_shape):
            return [self._pooled(tuple(s)) for s in input_shape]
        if self.devices:
            return [self._pooled((*input_shape[:-1], input_shape[-1] // self.groups))] * self.groups
        return self._pooled(input_shape)

    def _pooled(self, input_shape: tuple) -> tuple:
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
