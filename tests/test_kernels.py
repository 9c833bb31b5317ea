"""The faster kernels of `alexnet_keras.kernels` against the reference layers, on any CPU.

Each kernel is switched on by a forced `KernelPolicy` (never by pretending the host is another
CPU), run forward and backward in one traced step next to the reference layer's, and compared:
the output and the gradients w.r.t. the input and every weight. Each test also reads the traced
graph for the ops the kernel implies, so it cannot pass by running the reference. Then the host
rule on made-up CPUs, `resolve`, and `apply` on whole models.
"""

import dataclasses
import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras import constants, cpu, kernels
from alexnet_keras.kernels import Host, KernelPolicy
from alexnet_keras.kernels import conv as conv_kernels
from alexnet_keras.kernels import dense as dense_kernels
from alexnet_keras.kernels import lrn as lrn_kernels
from alexnet_keras.layers import (
    ColumnDropout,
    GroupedConv2D,
    GroupedDense,
    GroupedMaxPool2D,
    LocalResponseNormalization,
)
from alexnet_keras.model import build_alexnet

DTYPES = ["float32", "bfloat16"]
# Largest difference allowed, relative to the largest reference value: float32 round-off of the
# same sums in another order; in bfloat16, a couple of bfloat16 ulps (2^-8 each).
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}


# Helpers ----------------------------------------------------------------------------------------


def use_dtype(mixed_policy, dtype):
    """Keras's global policy for a compute dtype (the fixture restores float32 afterwards)."""
    mixed_policy("float32" if dtype == "float32" else "mixed_bfloat16")


def refused_on_this_cpu(dtype, chosen):
    """Whether `--kernels` refuses `chosen` in `dtype` on this CPU, checked either way: accepted
    unless one is in `kernels.unfit_kernels` (TF runs it wrong or not at all here), else refused
    in one line naming it. A test that cannot run a refused kernel ends there: the refusal is
    this CPU's path (AVX2-only CPUs in bfloat16)."""
    host = Host.this_machine(dtype)
    flag = ",".join(name for name in constants.KERNELS if name in chosen)
    unfit = [name for name in constants.KERNELS if name in chosen and name in
             kernels.unfit_kernels(host, dtype)]  # fmt: skip
    if not unfit:
        assert kernels.resolve(flag, dtype, host) == KernelPolicy(chosen)
        return False
    pattern = rf"^--kernels={flag} is invalid on this machine in {dtype}: {unfit[0]} [^\n]*$"
    with pytest.raises(ValueError, match=pattern):
        kernels.resolve(flag, dtype, host)
    return True


def container(*layers):
    """What `kernels.apply` reads of a model: its `layers`."""
    return types.SimpleNamespace(layers=list(layers))


def built(layer, input_shape, seed=0, stddev=0.2):
    """`layer` built for `input_shape`, its weights (biases too) drawn from N(0, stddev)."""
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0, stddev, weight.shape).astype(np.float32))
    return layer


def inputs_for(layer, input_shape, seed=1, scale=1.0, upstream_mean=0.0):
    """A random input and upstream gradient, both in the layer's compute dtype (the upstream
    gradient as float32 values that dtype holds exactly)."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(0, scale, input_shape), layer.compute_dtype)
    upstream = rng.normal(upstream_mean, 1, layer.compute_output_shape(input_shape))
    upstream = tf.cast(tf.constant(upstream, layer.compute_dtype), tf.float32)
    return x, upstream


def float32_twin(layer, input_shape):
    """The layer in float32, with the weights its bfloat16 computation reads (rounded)."""
    twin = type(layer).from_config({**layer.get_config(), "dtype": "float32"})
    if layer.weights:
        twin.build(input_shape)
        for t, w in zip(twin.weights, layer.weights):
            t.assign(tf.cast(tf.cast(w, tf.bfloat16), tf.float32))
    return twin


def traced_step(layer, x, upstream, policy):
    """`layer` under `policy`, one traced forward and backward pass: [output, gradient w.r.t.
    the input, gradient w.r.t. each trainable weight] of sum(output * upstream), and the graph."""
    kernels.apply(container(layer), policy)

    @tf.function
    def step(x, upstream):  # Both arguments: a constant upstream gradient would be folded.
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cast(upstream, y.dtype))
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    concrete = step.get_concrete_function(x, upstream)
    return concrete(x, upstream), concrete.graph


def compare(layer, x, upstream, policy, dtype, same_dtypes=True):
    """The kernel's step against the reference layer's (`KernelPolicy()`); their graphs.

    They agree within `TOLERANCE` of the largest value, plus in bfloat16 twice the reference's
    own error against float32 arithmetic on the same (rounded) numbers: where TF's bfloat16 CPU
    kernels are its own and not oneDNN's (AVX2), they accumulate in bfloat16, and the reference
    and the kernel, summing in another order, both stray by a few percent.
    """
    want, reference_graph = traced_step(layer, x, upstream, KernelPolicy())
    got, kernel_graph = traced_step(layer, x, upstream, policy)
    exact = want
    if dtype == "bfloat16":
        twin = float32_twin(layer, x.shape)
        exact, _ = traced_step(twin, tf.cast(x, tf.float32), upstream, KernelPolicy())
    names = ["output", "input gradient", *(w.path for w in layer.trainable_weights)]
    assert len(got) == len(want) == len(exact) == len(names)
    for name, g, w, e in zip(names, got, want, exact):
        assert g.shape == w.shape, name
        if same_dtypes:
            assert g.dtype == w.dtype, name
        g, w = (tf.cast(v, tf.float32).numpy() for v in (g, w))
        reference_error = float(np.abs(w - e.numpy()).max())
        atol = TOLERANCE[dtype] * float(np.abs(w).max()) + 2 * reference_error
        np.testing.assert_allclose(g, w, rtol=TOLERANCE[dtype], atol=atol, err_msg=name)
    return got, want, kernel_graph, reference_graph


def op_types(graph):
    """Op types of a traced graph, the bodies of its functions (the XLA ones) included."""
    found = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        found |= {node.op for node in function.node_def}
    return found


def convolutions(graph, op_type="Conv2D"):
    """(input channels, filter shape, strides) of each `op_type` op of the graph."""
    return [
        (op.inputs[0].shape[-1], tuple(op.inputs[1].shape), tuple(op.get_attr("strides")[1:3]))
        for op in graph.get_operations()
        if op.type == op_type
    ]


# lrn --------------------------------------------------------------------------------------------

LRN_CONSTANTS = {  # depth_radius, k, alpha, beta
    "paper": (constants.LRN_DEPTH_RADIUS, constants.LRN_K, constants.LRN_ALPHA, constants.LRN_BETA),
    "caffe": (
        constants.CAFFE_LRN_DEPTH_RADIUS,
        constants.CAFFE_LRN_K,
        constants.CAFFE_LRN_ALPHA / constants.CAFFE_LRN_LOCAL_SIZE,  # 2e-5, Caffe's alpha / n.
        constants.CAFFE_LRN_BETA,
    ),
    "other": (1, 1.5, 1e-3, 0.6),  # beta != 0.75: the pow branch; a window of 3.
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("form", list(LRN_CONSTANTS))
def test_lrn_kernel_equals_the_layer(mixed_policy, dtype, groups, relu, form):
    """On every CPU: the band convolution of two columns is grouped, but forward only (its
    gradient is written out as another forward band convolution), which TF runs everywhere."""
    assert not refused_on_this_cpu(dtype, {"lrn"})
    use_dtype(mixed_policy, dtype)
    depth_radius, k, alpha, beta = LRN_CONSTANTS[form]
    layer = LocalResponseNormalization(depth_radius, k, alpha, beta, groups=groups, relu=relu)
    shape, channels = (2, 3, 4, 12), 12
    # Activations up to ~150: alpha * sum(a^2) is of the order of k, so the denominator matters.
    x, upstream = inputs_for(layer, shape, scale=50.0)
    got, _, graph, reference = compare(layer, x, upstream, KernelPolicy({"lrn"}), dtype)
    assert got[0].dtype == tf.as_dtype(dtype)
    # The reference sums each window as a product with a band matrix (autodiff); the kernel as a
    # 1x1 band convolution (forward and backward), its gradient written out (IdentityN:
    # tf.custom_gradient), its elementwise passes XLA's.
    assert "Conv2D" not in op_types(reference)
    kernel_ops = op_types(graph)
    assert "IdentityN" in kernel_ops
    band = (channels, (1, 1, channels // groups, channels), (1, 1))
    assert convolutions(graph) == [band, band]
    if relu:  # ReLU's gradient folded into LRN's last pass, not TF's ReluGrad.
        assert "ReluGrad" in op_types(reference) and "ReluGrad" not in kernel_ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("form", list(LRN_CONSTANTS))
def test_portable_lrn_kernel_equals_the_layer(mixed_policy, dtype, groups, relu, form):
    """The serving kernel (plain TF ops in the input's dtype, no JIT, one band convolution per
    column): the layer's result, forward and gradients (TF differentiates its ops)."""
    use_dtype(mixed_policy, dtype)
    depth_radius, k, alpha, beta = LRN_CONSTANTS[form]
    layer = LocalResponseNormalization(depth_radius, k, alpha, beta, groups=groups, relu=relu)
    x, upstream = inputs_for(layer, (2, 3, 4, 12), scale=50.0)
    got, _, graph, _ = compare(layer, x, upstream, KernelPolicy({"portable_lrn"}), dtype)
    assert got[0].dtype == tf.as_dtype(dtype)
    band = (12 // groups, (1, 1, 12 // groups, 12 // groups), (1, 1))
    assert convolutions(graph) == [band] * groups  # Ungrouped: any TF runtime runs them.
    assert not any(op.type in ("XlaLaunch", "PartitionedCall") for op in graph.get_operations())
    assert ("Pow" in op_types(graph)) == (beta != 0.75)


def test_lrn_kernel_is_the_paper_formula():
    """The kernel against the formula of Sec. 3.3 evaluated in NumPy (float64), not only
    against the layer."""
    rng = np.random.default_rng(3)
    a = rng.normal(0, 100, (2, 2, 3, 8)).astype(np.float32)
    layer = LocalResponseNormalization(groups=2)
    kernels.apply(container(layer), KernelPolicy({"lrn"}))
    a64, out = a.astype(np.float64), np.empty(a.shape)
    for c in range(8):
        lo, hi = (c // 4) * 4, (c // 4) * 4 + 4  # Each column of 4 channels on its own.
        window = a64[..., max(lo, c - 2) : min(hi, c + 3)]
        out[..., c] = a64[..., c] / (2 + 1e-4 * np.sum(window**2, axis=-1)) ** 0.75
    np.testing.assert_allclose(layer(a).numpy(), out, rtol=1e-5)


# grouped_conv -----------------------------------------------------------------------------------

CONV_GEOMETRIES = [  # padding, strides
    ("same", 1),
    ("same", 2),
    ("valid", 2),
    (1, 1),  # torchvision's explicit padding
    ((2, 1), 3),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, split_input", [(1, True), (2, True), (2, False)])
@pytest.mark.parametrize("padding, strides", CONV_GEOMETRIES)
def test_grouped_conv_kernel_is_one_convolution(
    mixed_policy, dtype, groups, split_input, padding, strides
):
    needs_grouped_op = groups > 1 and split_input  # Else one ordinary convolution.
    if refused_on_this_cpu(dtype, {"grouped_conv"}) and needs_grouped_op:
        return
    use_dtype(mixed_policy, dtype)
    layer = GroupedConv2D(
        6, 3, strides=strides, padding=padding, groups=groups, split_input=split_input,
        activation="relu",
    )  # fmt: skip
    shape = (2, 9, 8, 4)
    built(layer, shape)
    x, upstream = inputs_for(layer, shape)
    _, _, graph, reference = compare(layer, x, upstream, KernelPolicy({"grouped_conv"}), dtype)
    # The reference convolves column by column; the kernel runs one convolution whose filter
    # reads C / groups channels (a grouped convolution), or all C with split_input=False.
    assert len(convolutions(reference)) == groups
    [(channels, kernel_shape, conv_strides)] = convolutions(graph)
    assert channels == 4 and conv_strides == (strides, strides)
    assert kernel_shape == (3, 3, 4 // groups if split_input else 4, 6)
    assert "Split" not in op_types(graph)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "make_layer, shape",
    [
        (lambda: GroupedConv2D(6, 3, padding="same", groups=2, activation="relu"), (2, 7, 7, 4)),
        (lambda: GroupedDense(6, groups=2, activation="relu"), (3, 2, 2, 4)),
    ],
)
def test_bias_add_kernel(mixed_policy, dtype, make_layer, shape):
    """Biases added by BiasAdd (which Grappler fuses into the convolution or matmul) instead of
    the reference's add; everything else the reference's."""
    use_dtype(mixed_policy, dtype)
    layer = built(make_layer(), shape)
    x, upstream = inputs_for(layer, shape)
    _, _, graph, reference = compare(layer, x, upstream, KernelPolicy({"bias_add"}), dtype)
    assert "BiasAdd" in op_types(graph) and "BiasAdd" not in op_types(reference)


def test_grouped_conv_kernel_without_bias():
    if refused_on_this_cpu("float32", {"grouped_conv"}):
        return
    layer = built(GroupedConv2D(6, 3, groups=2, use_bias=False), (2, 6, 6, 4))
    x, upstream = inputs_for(layer, (2, 6, 6, 4))
    _, _, graph, _ = compare(layer, x, upstream, KernelPolicy({"grouped_conv"}), "float32")
    assert len(convolutions(graph)) == 1 and "BiasAdd" not in op_types(graph)


# conv1_space_to_depth ---------------------------------------------------------------------------

# The paper's conv1 (two columns reading all 3 channels, valid) and torchvision's (one, padding 2)
# on the smallest inputs the network takes (67 px) up to 80, square or not.
CONV1_CASES = [  # height, width, padding, groups
    (67, 67, "valid", 2),
    (71, 80, "valid", 2),
    (67, 67, 2, 1),
    (76, 73, 2, 1),
]


@pytest.mark.parametrize("one_op", [False, True])
@pytest.mark.parametrize("height, width, padding, groups", CONV1_CASES)
def test_conv1_space_to_depth_kernel(mixed_policy, height, width, padding, groups, one_op):
    use_dtype(mixed_policy, "bfloat16")
    layer = GroupedConv2D(8, 11, strides=4, padding=padding, groups=groups, split_input=False)
    shape = (2, height, width, 3)
    built(layer, shape, stddev=0.05)
    x, upstream = inputs_for(layer, shape)
    chosen = {"conv1_space_to_depth", "grouped_conv"} if one_op else {"conv1_space_to_depth"}
    got, _, graph, reference = compare(layer, x, upstream, KernelPolicy(chosen), "bfloat16")
    assert got[0].shape == layer.compute_output_shape(shape)
    # The reference: 11x11/4 on 3 channels. The kernel: 3x3/1 on space_to_depth(x), 4x4 blocks
    # of 3 channels = 48, forward and in the filter gradient; one per column, or one in all.
    columns = 1 if one_op or groups == 1 else groups
    assert {c[::2] for c in convolutions(reference)} == {(3, (4, 4))}
    assert convolutions(graph) == [(48, (3, 3, 48, 8 // columns), (1, 1))] * columns
    assert {c[0] for c in convolutions(graph, "Conv2DBackpropFilter")} == {48}


@pytest.mark.parametrize("dtype, padding", [("float32", "valid"), ("bfloat16", "same")])
def test_conv1_space_to_depth_keeps_the_direct_convolution_elsewhere(mixed_policy, dtype, padding):
    """float32 (only bfloat16 was measured faster) and "same" padding stay strided."""
    use_dtype(mixed_policy, dtype)
    layer = built(GroupedConv2D(8, 11, strides=4, padding=padding, groups=1), (2, 67, 67, 3))
    x, upstream = inputs_for(layer, (2, 67, 67, 3))
    _, _, graph, _ = compare(layer, x, upstream, KernelPolicy({"conv1_space_to_depth"}), dtype)
    assert {c[::2] for c in convolutions(graph)} == {(3, (4, 4))}


@pytest.mark.parametrize(
    "height, width, kernel_size, stride",
    [
        (67, 67, (11, 11), 4),  # conv1 on the smallest input
        (70, 75, (11, 11), 4),
        (17, 14, (5, 3), 3),  # kernel not square, not a multiple of the stride
        (9, 9, (4, 4), 2),  # kernel a multiple of the stride
        (8, 11, (3, 3), 2),
        (5, 5, (5, 5), 5),  # one output
    ],
)
def test_space_to_depth_conv_equals_the_strided_convolution(height, width, kernel_size, stride):
    rng = np.random.default_rng(height * width + stride)
    x = tf.constant(rng.normal(size=(2, height, width, 3)), tf.float32)
    kernel = tf.constant(rng.normal(size=(*kernel_size, 3, 5)), tf.float32)

    def value_and_grads(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel)
            upstream = tf.constant(np.random.default_rng(0).normal(size=y.shape), tf.float32)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, kernel])]

    got = value_and_grads(lambda x, k: conv_kernels.space_to_depth_conv(x, k, stride))
    want = value_and_grads(lambda x, k: tf.nn.conv2d(x, k, stride, "VALID"))
    for name, g, w in zip(["output", "input gradient", "kernel gradient"], got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(tf.reduce_max(tf.abs(w))))
    graph = (
        tf.function(lambda x, k: conv_kernels.space_to_depth_conv(x, k, stride))
        .get_concrete_function(x, kernel)
        .graph
    )
    [(channels, _, strides)] = convolutions(graph)
    assert channels == stride * stride * 3 and strides == (1, 1)


# winograd ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, groups, one_op",
    [
        ((13, 13), 1, False),  # odd: the last tile half outside
        ((14, 16), 2, False),  # even, not square, one Winograd product per column
        ((13, 14), 2, True),  # both columns in one Winograd product (grouped_conv too)
    ],
)
def test_winograd_kernel_equals_the_layer(size, groups, one_op):
    layer = GroupedConv2D(6, 3, padding="same", groups=groups, activation="relu")
    shape = (2, *size, 4)
    built(layer, shape)
    x, upstream = inputs_for(layer, shape)
    chosen = {"winograd", "grouped_conv"} if one_op else {"winograd"}
    _, _, graph, reference = compare(layer, x, upstream, KernelPolicy(chosen), "float32")
    found = op_types(graph)
    assert "BatchMatMulV2" in found and not {"Conv2D", "Conv2DBackpropInput"} & found
    assert "BatchMatMulV2" not in op_types(reference)


@pytest.mark.parametrize("one_op", [False, True])
def test_winograd_falls_back_to_the_direct_convolution_in_bfloat16(mixed_policy, one_op):
    if refused_on_this_cpu("bfloat16", {"winograd", "grouped_conv"} if one_op else {"winograd"}):
        return
    use_dtype(mixed_policy, "bfloat16")
    layer = built(GroupedConv2D(6, 3, padding="same", groups=2), (2, 13, 13, 4))
    x, upstream = inputs_for(layer, (2, 13, 13, 4))
    chosen = {"winograd", "grouped_conv"} if one_op else {"winograd"}
    _, _, graph, _ = compare(layer, x, upstream, KernelPolicy(chosen), "bfloat16")
    assert "BatchMatMulV2" not in op_types(graph)
    assert len(convolutions(graph)) == (1 if one_op else 2)


@pytest.mark.parametrize(
    "padding, strides, size", [("valid", 1, 13), ("same", 2, 13), ("same", 1, 12)]
)
def test_winograd_leaves_other_convolutions_direct(padding, strides, size):
    """Not "same" 3x3 stride 1, or maps under winograd.MIN_SIZE (13): the direct convolution."""
    layer = GroupedConv2D(6, 3, strides=strides, padding=padding, groups=1)
    built(layer, (2, size, size, 4))
    x, upstream = inputs_for(layer, (2, size, size, 4))
    _, _, graph, _ = compare(layer, x, upstream, KernelPolicy({"winograd"}), "float32")
    assert "BatchMatMulV2" not in op_types(graph) and len(convolutions(graph)) == 1


def test_winograd_runs_torchvisions_padding_1():
    """torchvision's conv3-conv5 (3x3, explicit padding 1: the same as "same") run Winograd."""
    layer = built(GroupedConv2D(6, 3, padding=1, groups=1), (2, 13, 13, 4))
    x, upstream = inputs_for(layer, (2, 13, 13, 4))
    _, _, graph, _ = compare(layer, x, upstream, KernelPolicy({"winograd"}), "float32")
    assert "BatchMatMulV2" in op_types(graph)


# Bias gradients ---------------------------------------------------------------------------------

BIAS_CASES = {  # layer, input shape, kernels: every kernel path that adds the bias itself
    # BiasAdd and grouped_conv in bfloat16: accepted only where oneDNN runs bfloat16
    # convolutions (its fused bias gradients sum in float32); elsewhere the case checks the refusal.
    "conv, grouped_conv and bias_add": (
        lambda: GroupedConv2D(4, 3, padding="same", groups=2, activation="relu"),
        (4, 32, 32, 4),
        {"grouped_conv", "bias_add"},
    ),
    "conv1, space to depth and bias_add": (
        lambda: GroupedConv2D(4, 11, strides=4, groups=2, split_input=False),
        (4, 131, 131, 3),
        {"conv1_space_to_depth", "grouped_conv", "bias_add"},
    ),
    "fc, bias_add": (lambda: GroupedDense(4, groups=2, activation="relu"), (512, 8), {"bias_add"}),
    "conv, grouped_conv": (
        lambda: GroupedConv2D(4, 3, padding="same", groups=2),
        (4, 32, 32, 4),
        {"grouped_conv"},
    ),
    "conv, winograd (direct in bfloat16)": (
        lambda: GroupedConv2D(4, 3, padding="same", groups=1),
        (4, 32, 32, 4),
        {"winograd"},
    ),
    "conv1, space to depth": (
        lambda: GroupedConv2D(4, 11, strides=4, groups=2, split_input=False),
        (4, 131, 131, 3),
        {"conv1_space_to_depth"},
    ),
}


@pytest.mark.parametrize("case", list(BIAS_CASES))
def test_bias_gradients_are_summed_in_float32(mixed_policy, case):
    """Under mixed bfloat16 a bias gradient sums the upstream gradient over the batch and every
    position (conv1: 128 x 55 x 55 terms). The reference's (the gradient of `y + b`, TF's Sum)
    accumulates in float32; a bfloat16 accumulator stops growing once its sum passes ~256."""
    make_layer, shape, chosen = BIAS_CASES[case]
    if refused_on_this_cpu("bfloat16", chosen):
        return  # See the next test.
    use_dtype(mixed_policy, "bfloat16")
    layer = built(make_layer(), shape, stddev=0.05)
    x, upstream = inputs_for(layer, shape, upstream_mean=1.0)  # A loss pushing the biases one way.
    compare(layer, x, upstream, KernelPolicy(chosen), "bfloat16")


def test_bias_add_in_bfloat16_is_refused_exactly_where_its_bias_gradient_is_wrong(mixed_policy):
    """Where oneDNN takes no bfloat16 (AVX2-only CPUs), TF's own fused bias gradient sums in
    bfloat16 (4,096 terms near 1 came to ~1,070 on a Zen 3): `--kernels` refuses bias_add
    there. Where oneDNN does, the gradient is the reference's and bias_add is accepted."""
    use_dtype(mixed_policy, "bfloat16")
    layer = built(GroupedConv2D(4, 3, padding="same", groups=1), (4, 32, 32, 4), stddev=0.05)
    x, upstream = inputs_for(layer, (4, 32, 32, 4), upstream_mean=1.0)
    [*_, want], _ = traced_step(layer, x, upstream, KernelPolicy())
    [*_, got], _ = traced_step(layer, x, upstream, KernelPolicy({"bias_add"}))
    assert "bias" in layer.trainable_weights[-1].path and float(tf.reduce_min(want)) > 3000
    wrong = not np.allclose(got, want, rtol=0.05)
    assert wrong == refused_on_this_cpu("bfloat16", {"bias_add"})


# The host rule ----------------------------------------------------------------------------------


def fake_cpuinfo(model, flags):
    """/proc/cpuinfo of a two-CPU machine (flags on each processor's line, as Linux writes it)."""
    cpu_block = "processor\t: {}\nvendor_id\t: X\nmodel name\t: {}\nflags\t\t: {}\n\n"
    return "".join(cpu_block.format(i, model, flags) for i in range(2))


AMX_XEON = fake_cpuinfo(
    "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
    "fpu sse2 avx fma avx2 avx512f avx512bw avx512vl avx512_bf16 amx_bf16 amx_tile amx_int8",
)
ZEN4 = fake_cpuinfo(
    "AMD EPYC 9B14 96-Core Processor", "fpu sse2 avx fma avx2 avx512f avx512bw avx512_bf16"
)
ZEN2 = fake_cpuinfo("AMD EPYC 7B12 64-Core Processor", "fpu sse2 avx fma avx2 bmi2")
# oneDNN's bfloat16 kernels: with grouped convolutions in bfloat16 (AVX-512 or AMX, oneDNN on).
ONEDNN_BF16 = {"lrn", "grouped_conv", "conv1_space_to_depth", "bias_add"}
GPU_BF16 = {"lrn", "bias_add", "conv1_space_to_depth"}
HOSTS = {  # cpuinfo, GPUs, the grouped-convolution probe in (float32, bfloat16); the kernels
    # expected in (float32, bfloat16).
    "AMX Xeon": (AMX_XEON, 0, (True, True), ({"lrn"}, ONEDNN_BF16)),
    "AVX512-BF16 Zen 4": (ZEN4, 0, (True, True), ({"lrn"}, ONEDNN_BF16)),
    # oneDNN takes bfloat16 only with AVX-512 or AMX: on Zen 2 the bfloat16 probe says no.
    "AVX2 Zen 2": (ZEN2, 0, (True, False), ({"lrn", "winograd"}, set())),
    # GPUs: what the layers did there before the kernels left them (nothing measured there).
    "GPU host": (AMX_XEON, 1, (True, True), ({"lrn"}, GPU_BF16)),
    "AVX2 GPU host": (ZEN2, 2, (False, False), ({"lrn"}, GPU_BF16)),
    # Nothing known of the CPU (not Linux), or no oneDNN: no CPU-specific kernel.
    "empty cpuinfo": ("", 0, (False, False), (set(), set())),
    "AMX, no grouped convolutions": (AMX_XEON, 0, (False, False), (set(), set())),
    "AVX2, no grouped convolutions": (ZEN2, 0, (False, False), ({"winograd"}, set())),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("host_name", list(HOSTS))
def test_host_kernels_on_made_up_hosts(host_name, dtype):
    text, gpus, grouped, expected = HOSTS[host_name]
    index = DTYPES.index(dtype)
    host, expected = Host(cpu.flags(text), gpus, grouped[index]), expected[index]
    assert kernels.host_kernels(host, dtype) == expected
    assert kernels.resolve("auto", dtype, host) == KernelPolicy(expected)
    assert kernels.resolve("reference", dtype, host) == KernelPolicy()
    assert not expected & set(kernels.unfit_kernels(host, dtype))


NO_GROUPED_OP = ({"grouped_conv"}, {"grouped_conv", "bias_add"})
UNFIT = {  # host name: the kernels refused in (float32, bfloat16)
    "AMX Xeon": (set(), set()),
    "AVX512-BF16 Zen 4": (set(), set()),
    "AVX2 Zen 2": (set(), {"grouped_conv", "bias_add"}),
    "GPU host": (set(), set()),
    "AVX2 GPU host": (set(), set()),  # The GPU runs the training step.
    "empty cpuinfo": NO_GROUPED_OP,
    "AMX, no grouped convolutions": NO_GROUPED_OP,
    "AVX2, no grouped convolutions": NO_GROUPED_OP,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("host_name", list(HOSTS))
def test_kernels_refused_on_made_up_hosts(host_name, dtype):
    """Each kernel alone: accepted, or refused in one line naming it and why."""
    text, gpus, grouped, _ = HOSTS[host_name]
    index = DTYPES.index(dtype)
    host, unfit = Host(cpu.flags(text), gpus, grouped[index]), UNFIT[host_name][index]
    assert set(kernels.unfit_kernels(host, dtype)) == unfit
    for name in constants.KERNELS:
        if name in unfit:
            with pytest.raises(ValueError, match=rf"^--kernels=lrn,{name} is invalid on this "
                               rf"machine in {dtype}: {name} [^\n]+\. Leave it out"):  # fmt: skip
                kernels.resolve(f"lrn,{name}", dtype, host)
        else:
            assert kernels.resolve(name, dtype, host) == KernelPolicy({name})


def test_made_up_hosts_read_as_their_cpus():
    assert cpu.is_avx2_only(cpu.flags(ZEN2)) and not cpu.has_native_bfloat16(cpu.flags(ZEN2))
    for text in (AMX_XEON, ZEN4):
        assert cpu.has_native_bfloat16(cpu.flags(text)) and not cpu.is_avx2_only(cpu.flags(text))
    assert cpu.flags("") == frozenset() and cpu.name("") == "unknown"


def test_this_machine():
    host = Host.this_machine("float32")
    assert host.cpu_flags == cpu.flags()
    assert host.gpus == len(tf.config.list_physical_devices("GPU"))
    assert host.grouped_convolutions == conv_kernels.runs_grouped_convolutions("float32")
    assert kernels.resolve("auto", "float32") == KernelPolicy(kernels.host_kernels(host, "float32"))


def test_resolve_names_and_reference():
    assert kernels.resolve("reference", "float32") == KernelPolicy()
    assert kernels.resolve("lrn,winograd", "float32") == KernelPolicy({"lrn", "winograd"})
    assert kernels.resolve("lrn,winograd", "bfloat16").kernels == frozenset({"lrn", "winograd"})
    assert kernels.resolve(",".join(constants.KERNELS), "float32").kernels == set(constants.KERNELS)
    with pytest.raises(ValueError, match=r"--kernels=fastest is invalid.*auto, reference"):
        kernels.resolve("lrn,fastest", "float32")
    with pytest.raises(ValueError, match=r"--kernels=reference is invalid"):
        kernels.resolve("reference,lrn", "float32")


def test_kernel_policy_is_frozen_and_describes_itself():
    assert KernelPolicy().kernels == frozenset()
    assert KernelPolicy().describe() == "reference layers only"
    policy = KernelPolicy(["winograd", "lrn"])
    assert isinstance(policy.kernels, frozenset) and policy == KernelPolicy({"lrn", "winograd"})
    assert policy.describe() == "lrn, winograd"  # In KERNELS' order.
    assert hash(policy) == hash(KernelPolicy({"winograd", "lrn"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.kernels = frozenset()
    with pytest.raises(ValueError, match="--kernels=bogus"):
        KernelPolicy({"lrn", "bogus"})


# apply on models --------------------------------------------------------------------------------


def tiny_model():
    """Every kind of layer `apply` looks at, and some it does not."""
    images = keras.Input((9, 9, 3))
    x = GroupedConv2D(8, 3, strides=2, groups=2, split_input=False, name="conv1")(images)
    x = LocalResponseNormalization(groups=2, relu=True, name="lrn1")(x)
    x = GroupedMaxPool2D(2, 1, groups=2, name="pool1")(x)
    x = GroupedConv2D(8, 3, padding="same", groups=2, activation="relu", name="conv2")(x)
    x = GroupedDense(6, groups=2, activation="relu", name="fc6")(x)
    x = ColumnDropout(0.5, name="drop6")(x)
    return keras.Model(images, GroupedDense(3, groups=1, name="fc8")(x))


COVERED = {  # layers each kernel is handed to (the kernel decides by shape and dtype)
    "lrn": {"lrn1"},
    "portable_lrn": {"lrn1"},
    "grouped_conv": {"conv1", "conv2"},
    "conv1_space_to_depth": {"conv1", "conv2"},
    "winograd": {"conv1", "conv2"},
    "bias_add": {"conv1", "conv2", "fc6", "fc8"},
}
CONV_OPTIONS = {  # kernel name: grouped_conv2d's option
    "grouped_conv": "one_op",
    "conv1_space_to_depth": "space_to_depth",
    "winograd": "winograd_3x3",
    "bias_add": "bias_add",
}


@pytest.mark.parametrize("chosen", [{name} for name in constants.KERNELS] + [constants.KERNELS])
def test_apply_sets_fast_call_on_exactly_the_layers_covered(chosen):
    model = tiny_model()
    dropout_call = object()  # The training model's per-replica dropout: not apply's business.
    model.get_layer("drop6").fast_call = dropout_call
    before = json.dumps(model.get_config(), sort_keys=True)
    kernels.apply(model, KernelPolicy(chosen))
    with_kernel = {layer.name for layer in model.layers if getattr(layer, "fast_call", None)}
    assert with_kernel == set().union(*(COVERED[name] for name in chosen)) | {"drop6"}
    for layer in model.layers:
        if layer.name == "lrn1" and layer.name in with_kernel:  # lrn before portable_lrn.
            expected = lrn_kernels.fused_lrn if "lrn" in chosen else lrn_kernels.portable_lrn
            assert layer.fast_call is expected
        elif isinstance(layer, GroupedConv2D) and layer.name in with_kernel:
            assert layer.fast_call.func is conv_kernels.grouped_conv2d
            assert layer.fast_call.keywords == {o: k in chosen for k, o in CONV_OPTIONS.items()}
        elif isinstance(layer, GroupedDense) and layer.name in with_kernel:
            assert layer.fast_call is dense_kernels.grouped_dense
    # The model's config, what `.keras` files and exports are made from, is untouched.
    assert json.dumps(model.get_config(), sort_keys=True) == before
    kernels.apply(model, KernelPolicy())
    assert [layer.name for layer in model.layers if getattr(layer, "fast_call", None)] == ["drop6"]
    assert model.get_layer("drop6").fast_call is dropout_call


def test_a_policy_changes_no_config_of_alexnet():
    def alexnet(policy):
        return build_alexnet(10, (67, 67, 3), seed=0, kernel_policy=policy)

    reference, fast = alexnet(None), alexnet(KernelPolicy(constants.KERNELS))
    assert sum(getattr(layer, "fast_call", None) is not None for layer in fast.layers) == 10
    assert json.dumps(fast.get_config(), sort_keys=True) == json.dumps(
        reference.get_config(), sort_keys=True
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_chosen_once_never_while_tracing(mixed_policy, monkeypatch, dtype):
    """After `apply`, tracing and running the model (forward and backward) asks nothing of the
    host: its cpuinfo, the grouped convolution probe and `Host` all raise."""
    use_dtype(mixed_policy, dtype)
    chosen = set(constants.KERNELS) - set(kernels.unfit_kernels(Host.this_machine(dtype), dtype))
    model = build_alexnet(10, (67, 67, 3), seed=0, kernel_initializer="he_normal")
    kernels.apply(model, KernelPolicy(chosen))

    def no_host(*args, **kwargs):
        raise AssertionError("the host was consulted after the policy was applied")

    monkeypatch.setattr(cpu, "_info", no_host)
    monkeypatch.setattr(conv_kernels, "runs_grouped_convolutions", no_host)
    monkeypatch.setattr(Host, "this_machine", no_host)
    images = tf.constant(np.random.default_rng(5).normal(0, 1, (2, 67, 67, 3)), tf.float32)

    @tf.function
    def step(images):
        with tf.GradientTape() as tape:
            logits = model(images, training=False)
            loss = tf.reduce_sum(tf.square(logits))
        return logits, tape.gradient(loss, model.trainable_weights)

    graph = step.get_concrete_function(images).graph
    assert "IdentityN" in op_types(graph)  # Custom gradients: the kernels are in the graph.
    logits, grads = step(images)
    assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()
    assert all(np.isfinite(tf.cast(g, tf.float32).numpy()).all() for g in grads)
    if dtype == "float32":  # The whole network agrees with its reference layers.
        kernels.apply(model, KernelPolicy())
        want, want_grads = step.python_function(images)
        scale = float(tf.reduce_max(tf.abs(want)))
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4 * scale)
        for g, w in zip(grads, want_grads):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * float(tf.reduce_max(abs(w))))
