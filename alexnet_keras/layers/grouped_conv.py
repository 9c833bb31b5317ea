"""Grouped 2D convolution, one convolution per column (Sec. 3.2, Fig. 2)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import keras
import tensorflow as tf

from alexnet_keras.layers import columns, winograd

_per_group_ops = False  # Set by `per_group_ops()` while a SavedModel is traced.


@functools.cache
def native_grouped_kernels(dtype: str = "float32") -> bool:
    """Whether this process runs a grouped convolution (C/groups kernel channels) in `dtype` as
    one op, forward and backward, with its bias and ReLU fused in as Grappler fuses them.

    oneDNN's CPU kernels do, in the dtypes oneDNN takes on this CPU (bfloat16 needs AVX512 or
    AMX); TF's own CPU kernels have no grouped weight gradient, and none at all once the bias is
    fused in ("Fused conv implementation does not support grouped convolutions for now", TF
    2.21, an AVX2 AMD EPYC). So one tiny step finds out; GPUs, untested here, go per group.
    """
    if tf.config.list_physical_devices("GPU"):
        return False

    @tf.function
    def step(x: tf.Tensor, kernel: tf.Tensor) -> tuple[tf.Tensor, ...]:
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), tf.zeros(2, dtype)))
        strides = [1, 1, 1, 1]
        return (
            y,
            tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel,
                                           out_backprop=y, strides=strides, padding="SAME"),
            tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                            out_backprop=y, strides=strides, padding="SAME"),
        )  # fmt: skip

    with tf.init_scope(), tf.device("/cpu:0"):  # Runs eagerly, also when called while tracing.
        try:
            # Batch 2 and 2 channels a group: TF's own kernels run batch 1 and depthwise cases.
            step(tf.ones((2, 4, 4, 4), dtype), tf.ones((3, 3, 2, 2), dtype))
        except tf.errors.OpError:
            return False
    return True


@contextlib.contextmanager
def per_group_ops() -> Iterator[None]:
    """Traces grouped layers as one convolution per group, which every TF runtime runs.

    For SavedModels: TF Serving may run them on a CPU where oneDNN is off.
    """
    global _per_group_ops
    saved, _per_group_ops = _per_group_ops, True
    try:
        yield
    finally:
        _per_group_ops = saved


@keras.saving.register_keras_serializable(package="alexnet_keras")
class GroupedConv2D(keras.layers.Layer):
    """2D convolution split into `groups` columns: one convolution per group, then concatenated.

    With `split_input=True` (a grouped convolution, as the paper's conv2, conv4 and conv5) group g
    sees only input channels [g*C/groups, (g+1)*C/groups); with `split_input=False` every group
    sees all input channels and computes its share of the filters (as the paper's conv1 and conv3,
    whose two GPU halves read the whole input). Either way each group owns its own kernel and bias
    variables, so `devices` can place a group's weights and ops on its own device (the paper's
    two-GPU layout, Sec. 3.2). Without `devices` the columns run as one (grouped) convolution on
    one tensor; with them ("towers") the layer takes and returns a list of per-column tensors and
    runs each column's forward and backward on its device (a split_input=False layer copies the
    other columns to each device first: the paper's exchange at conv3). Each column's kernel is its
    own draw from `kernel_initializer`. With `groups=1` this is `keras.layers.Conv2D`.

    Why not `keras.layers.Conv2D(groups=...)`: Keras 3 forces XLA on grouped convolutions, and on
    CPU that trains about 7x slower for conv2's shape (1,464 ms vs ~200 ms a step, measured).

    Args:
        filters: total output channels (divisible by `groups`).
        kernel_size: int or pair.
        strides: int or pair.
        padding: `"valid"`, `"same"`, or explicit zero padding: an int p (p rows and columns on
            every side) or a pair (ph, pw) (ph rows above and below, pw columns left and right),
            as torch's `Conv2d(padding=...)`. torchvision's conv1 (11x11, stride 4, padding 2)
            needs it: "same" pads 224 to 56 outputs, torch's padding 2 gives 55.
        groups: number of columns.
        split_input: whether each group reads only its own slice of the input channels.
        activation: applied after concatenation.
        use_bias: whether to add a bias.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Conv2D`, applied per group.
        devices: optional device per group, e.g. `("/gpu:0", "/gpu:1")`.

    Input shape: `(batch, height, width, channels)` (towers: that split into per-column tensors,
    or the whole tensor for the first layer).
    Output shape: `(batch, new_height, new_width, filters)` (towers: a list of `groups` tensors of
    `filters / groups` channels).

    Example:
        >>> conv2 = GroupedConv2D(256, 5, padding="same", groups=2)
        >>> conv2(tf.zeros((1, 27, 27, 96))).shape
        TensorShape([1, 27, 27, 256])
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
        devices: Sequence[str] | None = None,
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
        self.devices = columns.check_devices(devices, groups)

    def build(self, input_shape: tuple | list) -> None:
        input_shape = columns.whole_shape(input_shape)  # Towers pass one shape per column.
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
        in_per_group = channels // self.groups if self.split_input else channels
        kernel_shape = (*self.kernel_size, in_per_group, self.filters // self.groups)
        self.kernels, self.biases = [], []
        for g in range(self.groups):
            suffix = "" if self.groups == 1 else f"_{g}"
            with tf.device(self.devices[g] if self.devices else None):
                self.kernels.append(
                    self.add_weight(  # Cast by columns.compute_weight.
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
                        self.add_weight(  # Cast by columns.compute_weight.
                            name=f"bias{suffix}",
                            shape=(self.filters // self.groups,),
                            initializer=columns.column_initializer(self.bias_initializer, g),
                            autocast=False,
                            regularizer=self.bias_regularizer,
                            constraint=self.bias_constraint,
                        )
                    )
        self.built = True

    def call(self, inputs: tf.Tensor | list[tf.Tensor]) -> tf.Tensor | list[tf.Tensor]:
        if not self.devices:
            return self._one_op(inputs)
        if not self.split_input:  # Every column reads all columns (conv1, conv3).
            reads = columns.read_all(inputs, self.devices)
            return [
                columns.on_device(device, self._column_fn(g), *reads[g])
                for g, device in enumerate(self.devices)
            ]
        parts = columns.as_columns(inputs, self.groups)
        outputs = []
        for g, device in enumerate(self.devices):
            if parts is not None:
                outputs.append(columns.on_device(device, self._column_fn(g), parts[g]))
            else:  # A whole tensor into a grouped layer: each device takes its slice.
                outputs.append(columns.on_device(device, self._column_fn(g, sliced=True), inputs))
        return outputs

    def _column_fn(self, g: int, sliced: bool = False) -> Callable[..., tf.Tensor]:
        def column(*reads: tf.Tensor) -> tf.Tensor:
            x = columns.whole(reads)
            if sliced:
                x = columns.split_channels(x, self.groups)[g]
            kernel = columns.compute_weight(self.kernels[g], x.dtype)
            y = self._conv(x, kernel)
            if self.use_bias:
                y = tf.nn.bias_add(y, columns.compute_weight(self.biases[g], y.dtype))
            return y if self.activation is None else self.activation(y)

        return column

    def _one_op(self, inputs: tf.Tensor) -> tf.Tensor:
        """All columns in one convolution: TF's grouped convolution (the kernel reads C/groups
        channels) for split_input, else one convolution with every column's filters. Same result
        as the per-column ops, without their channel split and concat (~4% of a CPU step). Where
        TF has no grouped kernel (`native_grouped_kernels`), a split_input layer runs per group."""
        if (
            self.split_input
            and self.groups > 1
            and (_per_group_ops or not native_grouped_kernels(inputs.dtype.name))
        ):
            parts = columns.split_channels(inputs, self.groups)
            return tf.concat([self._column_fn(g)(part) for g, part in enumerate(parts)], axis=-1)
        kernel = tf.concat([columns.compute_weight(k, inputs.dtype) for k in self.kernels], -1)
        y = self._conv(inputs, kernel)
        if self.use_bias:
            biases = [columns.compute_weight(b, y.dtype) for b in self.biases]
            y = tf.nn.bias_add(y, tf.concat(biases, axis=0))
        return y if self.activation is None else self.activation(y)

    def _conv(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """The (grouped) convolution. Explicit padding is tf.pad then "VALID": TF's Conv2D with an
        explicit padding list has no CPU gradient for grouped kernels ("Gradients for grouped
        convolutions are not supported on CPU", TF 2.21); for torchvision's conv1 the two take the
        same time forward and backward (~230 ms at batch 32, this machine). An ungrouped strided
        bfloat16 convolution of a known input size runs as `space_to_depth_conv`, a 3x3 stride-1
        one where `winograd.applies` as `winograd.conv3x3` (SavedModels keep TF's convolution)."""
        if (
            self.strides == (1, 1)
            and self.padding in ("same", (1, 1))
            and not _per_group_ops
            and winograd.applies(x, kernel)
        ):
            return winograd.conv3x3(x, kernel)
        if self.padding == "same":
            return tf.nn.conv2d(x, kernel, strides=self.strides, padding="SAME")
        if self.padding != "valid":
            rows, cols = self.padding
            x = tf.pad(x, [[0, 0], [rows, rows], [cols, cols], [0, 0]])
        stride = self.strides[0]
        if (
            x.dtype == tf.bfloat16
            and stride > 1
            and self.strides[1] == stride
            and kernel.shape[2] == x.shape[-1]  # Not grouped: folding would mix the groups.
            and None not in x.shape[1:3]
        ):
            return space_to_depth_conv(x, kernel, stride)
        return tf.nn.conv2d(x, kernel, strides=self.strides, padding="VALID")

    def _output_length(self, length: int | None, axis: int) -> int | None:
        window, stride = self.kernel_size[axis], self.strides[axis]
        if isinstance(self.padding, str):
            return columns.conv_output_length(length, window, stride, self.padding)
        if length is None:
            return None
        return (length + 2 * self.padding[axis] - window) // stride + 1

    def compute_output_shape(self, input_shape: tuple | list) -> tuple | list:
        input_shape = columns.whole_shape(input_shape)
        height = self._output_length(input_shape[1], 0)
        width = self._output_length(input_shape[2], 1)
        shape = (input_shape[0], height, width, self.filters)
        if self.devices:
            return [(*shape[:-1], self.filters // self.groups)] * self.groups
        return shape

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
            devices=list(self.devices) if self.devices else None,
        )
        return config


def space_to_depth_conv(x: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """`tf.nn.conv2d(x, kernel, stride, "VALID")` as a stride-1 convolution of space_to_depth(x).

    The same sums in another order: the kernel is zero-padded to a multiple of the stride and
    folded like the input, so conv1 (11x11/4 on 3 channels) becomes 3x3/1 on 48 channels. oneDNN's
    bfloat16 kernels (AMX) are slow on 3 input channels: conv1's forward and weight gradient take
    105 instead of 141 ms at batch 128 (AMX Xeon), for 19% more multiply-adds (the zero taps). In
    float32 those extra taps make it slower (342 vs 278-314 ms), so `_conv` uses it for bfloat16.

    Input `(batch, height, width, channels)`, kernel `(kh, kw, channels, filters)`; output as
    the strided convolution's.
    """
    kh, kw, channels, filters = kernel.shape
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
    taps_h, taps_w = -(-kh // stride), -(-kw // stride)  # Kernel blocks per axis.
    # Rows the folded convolution reads, rounded up to whole blocks (zeros beyond the input).
    need_h, need_w = (out_h - 1 + taps_h) * stride, (out_w - 1 + taps_w) * stride
    x = tf.pad(x, [[0, 0], [0, max(need_h - height, 0)], [0, max(need_w - width, 0)], [0, 0]])
    # space_to_depth(x, stride) (depth order dy, dx, c) as reshape + transpose: TF's SpaceToDepth
    # takes 35 ms for conv1's bfloat16 input at batch 128, the transpose 16 ms (AMX Xeon).
    x = tf.reshape(
        x[:, :need_h, :need_w], (-1, need_h // stride, stride, need_w // stride, stride, channels)
    )
    x = tf.reshape(
        tf.transpose(x, (0, 1, 3, 2, 4, 5)),
        (-1, need_h // stride, need_w // stride, stride * stride * channels),
    )
    kernel = tf.pad(kernel, [[0, taps_h * stride - kh], [0, taps_w * stride - kw], [0, 0], [0, 0]])
    kernel = tf.reshape(kernel, (taps_h, stride, taps_w, stride, channels, filters))
    kernel = tf.transpose(kernel, (0, 2, 1, 3, 4, 5))  # (ky, kx, dy, dx, c, filters)
    kernel = tf.reshape(kernel, (taps_h, taps_w, stride * stride * channels, filters))
    return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")


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
