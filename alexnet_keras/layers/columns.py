"""What the column-split layers share: devices, per-column initializers and device-pinned work.

The paper's net is two columns, one per GPU, that exchange tensors only at conv3's input and at
the fully connected layers (Sec. 3.2, Fig. 2). Without devices a layer runs its columns as one op
on one tensor. With one device per column ("towers") layers pass a list of per-column tensors, and
`on_device` keeps each column's forward AND backward ops on its own device: TF places gradient ops
by the device scope around the gradient call, not by their forward op's device, so without it the
whole backward pass ran on the first device (measured with tests/executed_placement.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

Columns = list[tf.Tensor]


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


def compute_weight(variable: keras.Variable, dtype: tf.DType) -> tf.Tensor:
    """A weight in the compute dtype, whose gradient also stays in the compute dtype.

    Under mixed precision TF's Cast gradient would convert every weight's gradient back to
    float32 in a separate pass over 61M values (with the forward cast, 4% of a bfloat16 step on
    an AMX CPU); PaperSGD's fused update reads the bfloat16 gradient and converts it in place.
    """
    value = tf.convert_to_tensor(variable)
    if value.dtype == dtype:
        return value

    @tf.custom_gradient
    def cast(weight: tf.Tensor) -> tuple:
        return tf.cast(weight, dtype), lambda upstream: upstream

    return cast(value)


def on_device(device: str, fn: Callable[..., tf.Tensor], *inputs: tf.Tensor) -> tf.Tensor:
    """`fn(*inputs)` with every op of its forward and its backward pass on `device`.

    Inputs on other devices are copied to `device` (for the paper's exchanges, the copy is the
    exchange), and so are their gradients on the way back. Variables `fn` reads get their
    gradients on `device` too. Integer inputs (seeds) get no gradient.
    """

    @tf.custom_gradient
    def pinned(*args: tf.Tensor) -> tuple:
        with tf.device(device), tf.GradientTape() as tape:
            tape.watch([a for a in args if a.dtype.is_floating])
            outputs = fn(*args)

        def grad(upstream: tf.Tensor, variables: Sequence[tf.Variable] | None = None) -> tuple:
            floats = [a for a in args if a.dtype.is_floating]
            variables = list(variables or [])
            with tf.device(device):
                grads = tape.gradient(outputs, floats + variables, output_gradients=upstream)
            float_grads = iter(grads[: len(floats)])
            inputs_grads = [next(float_grads) if a.dtype.is_floating else None for a in args]
            return inputs_grads, grads[len(floats) :]

        return outputs, grad

    with tf.device(device):  # Also the custom gradient's own IdentityN ops.
        return pinned(*inputs)


def fan_out(x: tf.Tensor, device: str, copies: int) -> list[tf.Tensor]:
    """`copies` references to `x` whose gradients are summed on `device`, x's own device.

    A column read by every device (conv3's and the fc layers' inputs) gets one gradient from each
    reader. TF's tape would sum them on the first device, sending the second column's share there
    and the sum back; summing here sends each share across once, as the paper's exchange.
    """

    @tf.custom_gradient
    def fanned(value: tf.Tensor) -> tuple:
        def grad(*upstream: tf.Tensor) -> tf.Tensor:
            with tf.device(device):
                return tf.add_n([g for g in upstream if g is not None])

        return [tf.identity(value) for _ in range(copies)], grad

    with tf.device(device):
        return fanned(x)


def read_all(inputs: tf.Tensor | Sequence[tf.Tensor], devices: Sequence[str]) -> list[Columns]:
    """What each device reads of a towers input that every column needs: all of it.

    `result[g]` holds every input column (or the one whole tensor, e.g. the images) for device g;
    each column's gradients are summed on its own device (`fan_out`).
    """
    parts = as_columns(inputs, len(devices))
    if parts is None:
        return [[inputs] for _ in devices]
    fanned = [fan_out(part, device, len(devices)) for part, device in zip(parts, devices)]
    return [[copies[g] for copies in fanned] for g in range(len(devices))]


def as_columns(inputs: tf.Tensor | Sequence[tf.Tensor], groups: int) -> Columns | None:
    """The per-column tensors of a towers layer's input, or None for a single tensor."""
    if isinstance(inputs, list | tuple):
        if len(inputs) != groups:
            raise ValueError(f"Expected {groups} column tensors. Received: {len(inputs)}")
        return list(inputs)
    return None


def is_columns_shape(shape: tuple | list) -> bool:
    """Whether a layer's input shape is one shape per column (towers) rather than one shape."""
    return isinstance(shape, list | tuple) and bool(shape) and isinstance(shape[0], list | tuple)


def whole_shape(shape: tuple | list) -> tuple:
    """The shape of the columns concatenated along channels (a single shape passes through)."""
    if not is_columns_shape(shape):
        return tuple(shape)
    channels = [s[-1] for s in shape]
    return (*shape[0][:-1], None if None in channels else sum(channels))


def whole(inputs: tf.Tensor | Sequence[tf.Tensor]) -> tf.Tensor:
    """One tensor from a towers layer's input: the columns concatenated along channels.

    Called inside `on_device`, so the other columns are copied to that device: the exchange.
    """
    columns = inputs if isinstance(inputs, list | tuple) else [inputs]
    return columns[0] if len(columns) == 1 else tf.concat(columns, axis=-1)


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
