"""Grouped 2D convolution, one convolution per column (Sec. 3.2, Fig. 2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import ops

from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class GroupedConv2D(keras.layers.Layer):
    """2D convolution split into `groups` columns: one convolution per column, concatenated.

    With `split_input=True` (a grouped convolution, as the paper's conv2, conv4 and conv5) column
    g sees only input channels [g*C/groups, (g+1)*C/groups); with `split_input=False` every column
    sees all input channels and computes its share of the filters (as the paper's conv1 and conv3,
    whose two GPU halves read the whole input). Either way each column owns its own kernel and
    bias variables (`kernel_g`, `bias_g`), each its own draw from `kernel_initializer`, so the
    towers builder can place a column on its own device. With `groups=1` this is
    `keras.layers.Conv2D`.

    Why not `keras.layers.Conv2D(groups=...)`: Keras 3's TensorFlow backend compiles grouped
    convolutions with XLA (which a stock TF Serving refuses) and it trained ~7x slower on CPU.

    Args:
        filters: total output channels (divisible by `groups`).
        kernel_size: int or pair.
        strides: int or pair.
        padding: `"valid"`, `"same"`, or explicit zero padding: an int p (p rows and columns on
            every side) or a pair (ph, pw), as torch's `Conv2d(padding=...)`. torchvision's conv1
            (11x11, stride 4, padding 2) needs it: "same" pads 224 to 56 outputs, torch's 55.
        groups: number of columns.
        split_input: whether each column reads only its own slice of the input channels.
        activation: applied to each column's output.
        use_bias: whether to add a bias.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Conv2D`, applied per column.
        devices: accepted from files saved before 0.2 and not used (placement is outside layers).

    Input shape: `(batch, height, width, channels)`.
    Output shape: `(batch, new_height, new_width, filters)`.

    Example:
        >>> conv2 = GroupedConv2D(256, 5, padding="same", groups=2)
        >>> conv2(keras.ops.zeros((1, 27, 27, 96))).shape
        (1, 27, 27, 256)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = "valid",
        groups: int = 2,
        split_input: bool = True,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        bias_regularizer: str | keras.regularizers.Regularizer | None = None,
        kernel_constraint: str | keras.constraints.Constraint | None = None,
        bias_constraint: str | keras.constraints.Constraint | None = None,
        devices: object = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"`groups` must be a positive integer. Received: groups={groups}")
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters}")
        if filters % groups:
            raise ValueError(
                f"`filters` must be divisible by `groups`. Received: groups={groups}, "
                f"filters={filters}"
            )
        columns.check_legacy_devices(devices, groups)
        self.filters = filters
        self.kernel_size = columns.pair(kernel_size, "kernel_size")
        self.strides = columns.pair(strides, "strides")
        self.padding = _padding(padding)
        self.groups = groups
        self.split_input = bool(split_input)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        # A faster kernel for the same result (`alexnet_keras.kernels`), set outside the layer.
        self.fast_call: Callable | None = None

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the input must be known. Received: {input_shape}"
            )
        if self.split_input and channels % self.groups:
            raise ValueError(
                f"Input channels must be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )
        in_per_column = channels // self.groups if self.split_input else channels
        kernel_shape = (*self.kernel_size, in_per_column, self.filters // self.groups)
        self.kernels, self.biases = [], []
        for g in range(self.groups):
            suffix = "" if self.groups == 1 else f"_{g}"
            self.kernels.append(
                self.add_weight(  # Cast where read: column() and the kernels.
                    name=f"kernel{suffix}",
                    shape=kernel_shape,
                    initializer=columns.column_initializer(self.kernel_initializer, g),
                    autocast=False,
                    regularizer=self.kernel_regularizer,
                    constraint=self.kernel_constraint,
                )
            )
            if self.use_bias:
                self.biases.append(
                    self.add_weight(
                        name=f"bias{suffix}",
                        shape=(self.filters // self.groups,),
                        initializer=columns.column_initializer(self.bias_initializer, g),
                        autocast=False,
                        regularizer=self.bias_regularizer,
                        constraint=self.bias_constraint,
                    )
                )

    def call(self, inputs: object) -> object:
        if self.fast_call is not None:
            return self.fast_call(self, inputs)
        if self.split_input:
            parts = columns.split_channels(inputs, self.groups)
        else:
            parts = [inputs] * self.groups
        return columns.concat_channels([self.column(g, x) for g, x in enumerate(parts)])

    def column(self, g: int, x: object) -> object:
        """Column g's maps from its input: its slice, or all channels (split_input=False)."""
        if self.padding in ("valid", "same"):
            padding = self.padding
        else:
            rows, cols = self.padding
            x = ops.pad(x, [[0, 0], [rows, rows], [cols, cols], [0, 0]])
            padding = "valid"
        kernel = ops.cast(self.kernels[g], x.dtype)
        y = ops.conv(x, kernel, strides=self.strides, padding=padding)
        if self.use_bias:
            y = y + ops.cast(self.biases[g], y.dtype)
        return self.activation(y)

    def _output_length(self, length: int | None, axis: int) -> int | None:
        window, stride = self.kernel_size[axis], self.strides[axis]
        if isinstance(self.padding, str):
            return columns.conv_output_length(length, window, stride, self.padding)
        if length is None:
            return None
        return (length + 2 * self.padding[axis] - window) // stride + 1

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        height = self._output_length(input_shape[1], 0)
        width = self._output_length(input_shape[2], 1)
        return (input_shape[0], height, width, self.filters)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            groups=self.groups,
            split_input=self.split_input,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config


def _padding(padding: str | int | Sequence[int]) -> str | tuple[int, int]:
    """The padding as "valid"/"same" (lower case) or explicit (rows, cols) per side."""
    if isinstance(padding, str) and padding.lower() in ("valid", "same"):
        return padding.lower()
    pair = (padding, padding) if isinstance(padding, int) else padding
    if (
        not isinstance(pair, str)
        and isinstance(pair, Sequence)
        and len(pair) == 2
        and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pair)
    ):
        return tuple(pair)
    raise ValueError(
        "`padding` must be 'valid', 'same', a non-negative integer or a pair of them. "
        f"Received: padding={padding!r}"
    )
