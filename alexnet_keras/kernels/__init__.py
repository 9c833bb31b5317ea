"""Faster TensorFlow kernels for the reference layers, and the one policy that picks them.

Each kernel is a function with its layer's `call` signature, `fn(layer, inputs)`, computing the
layer's result (within float32 rounding) in fewer or faster ops. A frozen `KernelPolicy` names
the kernels to use; `resolve` makes it once, from the `--kernels` flag and the host, before
anything is traced, and `apply` hands each layer its kernel (`layer.fast_call`). Layers never
look at the machine, and nothing here is saved with a model: `.keras` files hold the reference
layers' configs, and export always builds the same `PORTABLE` policy (plain TF ops, no JIT).

Kernels (BUILD_NOTES keeps the measured gain of each on the CPUs where it runs):
    lrn                   LRN's gradient written out, one XLA loop a pass (kernels/lrn.py)
    portable_lrn          LRN's forward in plain TF ops: CPU and GPU kernels, no JIT (serving)
    grouped_conv          all columns of a convolution as one grouped op (oneDNN)
    conv1_space_to_depth  bfloat16 conv1 as a stride-1 convolution of space_to_depth(x)
    winograd              float32 conv3-conv5 by Winograd F(2x2, 3x3), on maps of 13x13 and up
    bias_add              biases added by BiasAdd ops (fused into the conv or matmul)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import keras

from alexnet_keras import cpu
from alexnet_keras.constants import KERNELS
from alexnet_keras.layers import GroupedConv2D, GroupedDense, LocalResponseNormalization


@dataclasses.dataclass(frozen=True)
class KernelPolicy:
    """The kernels a model runs instead of its layers' reference `call` (none by default)."""

    kernels: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", frozenset(self.kernels))
        unknown = sorted(self.kernels - set(KERNELS))
        if unknown:
            raise ValueError(
                f"--kernels={','.join(unknown)} is invalid: expected auto, reference or some of "
                f"{', '.join(KERNELS)}."
            )

    def describe(self) -> str:
        return ", ".join(k for k in KERNELS if k in self.kernels) or "reference layers only"


# What export, evaluation and prediction build, on any machine: plain TF ops with CPU and GPU
# kernels, no JIT (a stock tensorflow_model_server refuses XLA's must-compile functions), nothing
# chosen by the host; forward only, so BiasAdd's bfloat16 gradient does not matter.
PORTABLE = KernelPolicy(frozenset({"portable_lrn", "bias_add"}))


@dataclasses.dataclass(frozen=True)
class Host:
    """What the kernel choice rests on: the CPU's flags, GPUs, and whether TF runs grouped
    convolutions as one op in the compute dtype (`conv.runs_grouped_convolutions`)."""

    cpu_flags: frozenset[str]
    gpus: int
    grouped_convolutions: bool

    @classmethod
    def this_machine(cls, compute_dtype: str) -> Host:
        import tensorflow as tf

        from alexnet_keras.kernels import conv

        return cls(
            cpu.flags(),
            len(tf.config.list_physical_devices("GPU")),
            conv.runs_grouped_convolutions(compute_dtype),
        )


def host_kernels(host: Host, compute_dtype: str) -> frozenset[str]:
    """`--kernels=auto`: the kernels measured to buy >= 3% of a training step on this kind of
    host in this dtype (BUILD_NOTES, "Kernels").

    CPUs where TF runs this dtype's grouped convolutions as one op (oneDNN): the LRN kernel (its
    window sum is one), and in bfloat16 also one grouped op, conv1 by space-to-depth and BiasAdd
    (oneDNN sums its bfloat16 gradient in float32); Winograd in float32 on AVX2-only CPUs. GPUs,
    where nothing was measured: what the layers did there before the kernels moved out of them
    (the LRN kernel; BiasAdd and space-to-depth in bfloat16), so no GPU run got slower.
    """
    bfloat16 = compute_dtype == "bfloat16"
    if host.gpus:
        return frozenset({"lrn", *(["bias_add", "conv1_space_to_depth"] if bfloat16 else [])})
    chosen = set()
    if host.grouped_convolutions:
        chosen.add("lrn")
        if bfloat16:
            chosen |= {"grouped_conv", "conv1_space_to_depth", "bias_add"}
    if cpu.is_avx2_only(host.cpu_flags) and not bfloat16:
        chosen.add("winograd")
    return frozenset(chosen)


def resolve(kernels: str, compute_dtype: str, host: Host | None = None) -> KernelPolicy:
    """The policy of `--kernels` (auto, reference, or a comma-separated list) on `host`; a list
    naming a kernel that `host` runs wrong or not at all in this dtype is refused, naming it."""
    if kernels == "reference":
        return KernelPolicy()
    if kernels == "auto":
        return KernelPolicy(host_kernels(host or Host.this_machine(compute_dtype), compute_dtype))
    policy = KernelPolicy(frozenset(name for name in kernels.split(",") if name))
    unfit = unfit_kernels(host or Host.this_machine(compute_dtype), compute_dtype)
    refused = [name for name in KERNELS if name in policy.kernels and name in unfit]
    if refused:
        raise ValueError(
            f"--kernels={kernels} is invalid on this machine in {compute_dtype}: {refused[0]} "
            f"{unfit[refused[0]]}. Leave it out, or use --kernels=auto."
        )
    return policy


def unfit_kernels(host: Host, compute_dtype: str) -> dict[str, str]:
    """Kernels TF's own CPU kernels run wrong or not at all, with why: on a CPU without GPUs
    whose grouped convolutions in this dtype are not one op (oneDNN does not take the dtype)."""
    if host.gpus or host.grouped_convolutions:
        return {}
    unfit = {
        "grouped_conv": "needs the gradient of a grouped convolution, which TF runs on a CPU "
        "only in oneDNN (bfloat16: CPUs with AVX-512 or AMX)"
    }
    if compute_dtype == "bfloat16":  # oneDNN's fused bias gradients sum in float32.
        unfit["bias_add"] = (
            "would sum the bias gradients in bfloat16 (TF's own BiasAddGrad: 512 ones sum to 256)"
        )
    return unfit


def apply(model: keras.Model, policy: KernelPolicy) -> None:
    """Gives each layer of `model` the policy's kernel (or the reference: `fast_call = None`)."""
    from alexnet_keras.kernels import conv, dense, lrn

    on = policy.kernels.__contains__
    for layer in model.layers:
        if isinstance(layer, LocalResponseNormalization):
            if on("lrn") or on("portable_lrn"):
                layer.fast_call = lrn.fused_lrn if on("lrn") else lrn.portable_lrn
            else:
                layer.fast_call = None
        elif isinstance(layer, GroupedConv2D):
            layer.fast_call = _kernel(
                conv.grouped_conv2d,
                one_op=on("grouped_conv"),
                space_to_depth=on("conv1_space_to_depth"),
                winograd_3x3=on("winograd"),
                bias_add=on("bias_add"),
            )
        elif isinstance(layer, GroupedDense):
            layer.fast_call = dense.grouped_dense if on("bias_add") else None


def _kernel(function: Callable, **options: bool) -> Callable | None:
    """`function` with its options bound, or None (the reference) when none is on."""
    return functools.partial(function, **options) if any(options.values()) else None
