"""Arithmetic cost of the model, counted from its layers (not hard-coded), for the benchmark."""

from __future__ import annotations

import math

import keras

from alexnet_keras.layers import GroupedConv2D, GroupedDense

# A training step costs about 3x the forward pass: the backward pass computes the gradients
# with respect to both the activations and the weights, each as costly as the forward.
TRAIN_FLOPS_PER_FORWARD_FLOP = 3


def forward_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass through the convolutions and fc layers.

    LRN, pooling, ReLU and bias adds are a fraction of a percent and are not counted. The
    paper's net at 227x227 costs 0.724 GMACs.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, GroupedConv2D):
            output = layer.output[0] if isinstance(layer.output, list) else layer.output
            _, height, width, _ = output.shape
            for kernel in layer.kernels:  # (kh, kw, in_per_group, out_per_group)
                total += math.prod(kernel.shape) * height * width
        elif isinstance(layer, GroupedDense):
            total += sum(math.prod(kernel.shape) for kernel in layer.kernels)
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.kernel.shape)
    return total


def train_flops_per_image(model: keras.Model) -> float:
    """FLOPs of one training step per image: 2 FLOPs per MAC, forward plus backward."""
    return 2.0 * forward_macs(model) * TRAIN_FLOPS_PER_FORWARD_FLOP
