"""The FLOP count against the paper's layer shapes, computed by hand."""

import pytest

from alexnet_keras.flops import forward_macs, train_flops_per_image
from alexnet_keras.model import build_alexnet


def test_forward_macs_of_the_papers_net():
    by_hand = (
        11 * 11 * 3 * 96 * 55 * 55  # conv1
        + 5 * 5 * 48 * 256 * 27 * 27  # conv2, two groups of 48 input maps
        + 3 * 3 * 256 * 384 * 13 * 13  # conv3
        + 3 * 3 * 192 * 384 * 13 * 13  # conv4
        + 3 * 3 * 192 * 256 * 13 * 13  # conv5
        + 9216 * 4096 + 4096 * 4096 + 4096 * 1000  # fc6, fc7, fc8
    )  # fmt: skip
    model = build_alexnet()
    assert forward_macs(model) == by_hand
    assert by_hand / 1e9 == pytest.approx(0.724, abs=0.001)
    assert train_flops_per_image(model) / 1e9 == pytest.approx(4.35, abs=0.01)


def test_counts_follow_the_input_size():
    assert forward_macs(build_alexnet(10, (67, 67, 3))) < forward_macs(build_alexnet(10))
