"""Max pooling of the paper's column-split maps (Sec. 3.2, 3.4)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class GroupedMaxPool2D(keras.layers.Layer):
    """Overlapping max pooling (Sec. 3.4: 3x3 windows, stride 2) of `groups` channel columns.

    Pooling is per channel, so the result equals `keras.layers.MaxPooling2D` whatever `groups`
    is; `groups` records the columns, so the towers builder pools each column on its device.

    Args:
        pool_size: int or pair.
        strides: int or pair.
        padding: `"valid"` or `"same"`.
        groups: number of channel columns.
        devices: accepted from files saved before 0.2 and not used (placement is outside layers).

    Input shape: `(batch, height, width, channels)`.
    Output shape: `(batch, new_height, new_width, channels)`.

    Example:
        >>> GroupedMaxPool2D(3, 2)(keras.ops.zeros((1, 55, 55, 96))).shape
        (1, 27, 27, 96)
    """

    def __init__(
        self,
        pool_size: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 2,
        padding: str = "valid",
        groups: int = 1,
        devices: object = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"`groups` must be a positive integer. Received: groups={groups}")
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: padding={padding}")
        columns.check_legacy_devices(devices, groups)
        self.pool_size = columns.pair(pool_size, "pool_size")
        self.strides = columns.pair(strides, "strides")
        self.padding = padding.lower()
        self.groups = groups

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"Input channels must be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )

    def call(self, inputs: object) -> object:
        return ops.max_pool(inputs, self.pool_size, self.strides, self.padding)

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
        )
        return config
