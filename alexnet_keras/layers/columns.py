"""Helpers shared by the column-split layers: device lists, channel splits, output sizes."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def check_devices(devices: Sequence[str] | None, groups: int) -> tuple[str, ...] | None:
    if devices is None:
        return None
    devices = tuple(devices)
    if len(devices) != groups:
        raise ValueError(
            f"`devices` must name one device per group ({groups}). Received: devices={devices}"
        )
    return devices


def split_channels(x: tf.Tensor, groups: int) -> list[tf.Tensor]:
    return [x] if groups == 1 else tf.split(x, groups, axis=-1)


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(
            f"`{name}` must be a positive integer or a pair of them. Received: {name}={value}"
        )
    return pair


def conv_output_length(length: int | None, window: int, stride: int, padding: str) -> int | None:
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - window) // stride + 1
