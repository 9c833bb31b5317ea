"""What the column-split layers share: the split into columns, per-column initializers, shapes.

The paper's net is two columns, one per GPU, that exchange tensors only at conv3's input and at
the fully connected layers (Sec. 3.2, Fig. 2). Each layer computes its columns one by one and
concatenates them; where each column runs is not the layers' business (see `training/towers.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


def split_channels(x: object, groups: int) -> list:
    """The `groups` equal slices of `x`'s last axis (the columns' feature maps)."""
    return [x] if groups == 1 else ops.split(x, groups, axis=-1)


def concat_channels(columns: Sequence[object]) -> object:
    return columns[0] if len(columns) == 1 else ops.concatenate(list(columns), axis=-1)


def column_initializer(
    initializer: keras.initializers.Initializer, column: int
) -> keras.initializers.Initializer:
    """The initializer of column `column`: an independent draw from the same distribution.

    A Keras initializer with an integer seed (also the one it picks for `seed=None`) returns the
    same values on every call, so calling one initializer per column made the columns identical.
    Column 0 keeps the layer's seed; column c gets a seed derived from it, so a seeded model is
    reproducible and its columns differ, as the paper's two independently initialised GPUs.
    """
    seed = getattr(initializer, "seed", None)
    if column == 0 or not isinstance(seed, int):  # Constants, or a SeedGenerator that advances.
        return initializer
    config = initializer.get_config()
    config["seed"] = (seed * 1_000_003 + column) % (2**31 - 1)
    return initializer.__class__.from_config(config)


def check_legacy_devices(devices: object, groups: int) -> None:
    """`devices`, an argument of layers saved before 0.2 (they placed their own columns).

    Placement is the towers builder's now, so a saved value is accepted and not used; a wrong
    one is still refused, as it was.
    """
    if devices is not None and len(tuple(devices)) != groups:
        raise ValueError(
            f"`devices` must name one device per group ({groups}). Received: devices={devices}"
        )


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
