"""Faster forms of `GroupedConv2D.call`: one grouped op, conv1 by space-to-depth, Winograd.

Each is the same convolution as the reference (the same sums, in another order where noted);
`grouped_conv2d` runs whichever the policy switched on, decided from the layer's static shape
and dtype only.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from alexnet_keras.kernels import winograd


def grouped_conv2d(
    layer: object,
    inputs: tf.Tensor,
    *,
    one_op: bool = False,
    space_to_depth: bool = False,
    winograd_3x3: bool = False,
    bias_add: bool = False,
) -> tf.Tensor:
    """`GroupedConv2D.call` with the policy's kernels switched on.

    Args:
        one_op: all columns as one convolution: TF's grouped convolution (the kernel reads
            C/groups channels) for split_input, else one convolution with every column's filters;
            no channel split and concat (~4% of a CPU step, oneDNN).
        space_to_depth: an ungrouped strided bfloat16 convolution (conv1) by
            `space_to_depth_conv`.
        winograd_3x3: float32 3x3 stride-1 "same" convolutions (conv3-conv5) by Winograd's
            F(2x2, 3x3).
        bias_add: biases added by BiasAdd (`add_bias`).
    """
    x = inputs
    odd = all(k % 2 for k in layer.kernel_size)
    same = tuple((k - 1) // 2 for k in layer.kernel_size)  # torch's padding 1 of a 3x3 conv.
    if layer.padding == "same" or (odd and layer.strides == (1, 1) and layer.padding == same):
        padding = "SAME"
    else:
        padding = "VALID"
        if layer.padding != "valid":
            rows, cols = layer.padding
            x = tf.pad(x, [[0, 0], [rows, rows], [cols, cols], [0, 0]])
    conv = functools.partial(
        _conv, strides=layer.strides, padding=padding, space_to_depth=space_to_depth,
        winograd_3x3=winograd_3x3,
    )  # fmt: skip
    if one_op or layer.groups == 1:
        kernel = tf.concat([cast_weight(k, x.dtype) for k in layer.kernels], axis=-1)
        y = conv(x, kernel)
        if layer.use_bias:
            bias = tf.concat([cast_weight(b, y.dtype) for b in layer.biases], axis=0)
            y = add_bias(y, bias, bias_add)
        return layer.activation(y)
    parts = tf.split(x, layer.groups, axis=-1) if layer.split_input else [x] * layer.groups
    outputs = []
    for g, part in enumerate(parts):
        y = conv(part, cast_weight(layer.kernels[g], x.dtype))
        if layer.use_bias:
            y = add_bias(y, cast_weight(layer.biases[g], y.dtype), bias_add)
        outputs.append(layer.activation(y))
    return tf.concat(outputs, axis=-1)


def add_bias(y: tf.Tensor, bias: tf.Tensor, bias_add: bool) -> tf.Tensor:
    """y + bias: with `bias_add` a BiasAdd, which Grappler fuses into the convolution or matmul
    before it (and oneDNN its gradient into theirs); else the reference's add, whose gradient
    (a Sum) accumulates in float32 where TF's own BiasAddGrad CPU kernel sums bfloat16 in
    bfloat16 (387,200 ones summed to 512): the policy takes BiasAdd for bfloat16 training only
    where its gradient is summed in float32."""
    return tf.nn.bias_add(y, bias) if bias_add else y + bias


def cast_weight(variable: object, dtype: tf.DType) -> tf.Tensor:
    """A weight in the compute dtype (TF's Cast: its gradient comes back in the weight's dtype)."""
    return tf.cast(tf.convert_to_tensor(variable), dtype)


def _conv(
    x: tf.Tensor,
    kernel: tf.Tensor,
    strides: tuple[int, int],
    padding: str,
    space_to_depth: bool,
    winograd_3x3: bool,
) -> tf.Tensor:
    if winograd_3x3 and strides == (1, 1) and padding == "SAME" and winograd.applies(x, kernel):
        return winograd.conv3x3(x, kernel)
    stride = strides[0]
    if (
        space_to_depth
        and x.dtype == tf.bfloat16
        and stride > 1
        and strides[1] == stride
        and padding == "VALID"
        and kernel.shape[2] == x.shape[-1]  # Not grouped: folding would mix the groups.
        and None not in x.shape[1:3]
    ):
        return space_to_depth_conv(x, kernel, stride)
    return tf.nn.conv2d(x, kernel, strides=strides, padding=padding)


def space_to_depth_conv(x: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """`tf.nn.conv2d(x, kernel, stride, "VALID")` as a stride-1 convolution of space_to_depth(x).

    The same sums in another order: the kernel is zero-padded to a multiple of the stride and
    folded like the input, so conv1 (11x11/4 on 3 channels) becomes 3x3/1 on 48 channels. oneDNN's
    bfloat16 kernels (AMX) are slow on 3 input channels.

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
    # took 35 ms for conv1's bfloat16 input at batch 128, the transpose 16 ms (AMX Xeon).
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


@functools.cache
def runs_grouped_convolutions(dtype: str = "float32") -> bool:
    """Whether this process runs a grouped convolution (C/groups kernel channels) in `dtype` as
    one op on the CPU, forward and backward, with its bias and ReLU fused in as Grappler does.

    oneDNN's CPU kernels do, in the dtypes oneDNN takes on this CPU (bfloat16 needs AVX512 or
    AMX); TF's own CPU kernels have no grouped weight gradient, and none at all once the bias is
    fused in. So one tiny step finds out (the policy asks once, before any tracing).
    """

    @tf.function(autograph=False)
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

    with tf.init_scope(), tf.device("/cpu:0"):
        try:
            # Batch 2 and 2 channels a group: TF's own kernels run batch 1 and depthwise cases.
            step(tf.ones((2, 4, 4, 4), dtype), tf.ones((3, 3, 2, 2), dtype))
        except tf.errors.OpError:
            return False
    return True
