"""The paper's model parallelism (Sec. 3.2, Fig. 2): column g of every layer on device g.

The layers compute their columns one by one (`layer.column`); here each column's forward AND
backward ops run on its own device, its weights and momentum live there, and the devices
exchange only what Fig. 2 draws: the images, conv3's input and the fully connected layers'
inputs (and fc8's logits, gathered on the first device for the loss). TF places gradient ops by
the device scope around the gradient call, not by their forward op's device, so each column runs
inside `on_device`, whose custom gradient differentiates it under the same scope; without it the
whole backward pass ran on the first device (measured with tests/executed_placement.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence

import keras
import tensorflow as tf

from alexnet_keras.layers import (
    ColumnDropout,
    GroupedConv2D,
    GroupedDense,
    GroupedMaxPool2D,
    LocalResponseNormalization,
)

Columns = list[tf.Tensor]


@contextlib.contextmanager
def variables_on(devices: Sequence[str]) -> Iterator[None]:
    """Creates each column's variables (`kernel_g`, `bias_g`) on `devices[g]`.

    Build the network inside it: the layers name their columns' weights, the placement is here.
    """

    def creator(next_creator: Callable, **kwargs: object) -> tf.Variable:
        column = re.fullmatch(r".*_(\d+)", str(kwargs.get("name") or ""))
        if column is None or int(column.group(1)) >= len(devices):
            return next_creator(**kwargs)
        with tf.device(devices[int(column.group(1))]):
            return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        yield


def check_network(network: keras.Model, devices: Sequence[str]) -> None:
    """Refuses a network whose layers cannot run one column per device."""
    for layer in network.layers:
        groups = getattr(layer, "groups", len(devices))
        if groups != len(devices):
            raise ValueError(
                f"Towers run one column per device: layer {layer.name} has {groups} column(s) "
                f"for {len(devices)} devices. Caffe's LRN (--lrn_form=caffe) normalizes across "
                "both columns, an exchange the paper's layout never made."
            )


def forward(
    network: keras.Model, devices: Sequence[str], images: tf.Tensor, training: bool = False
) -> tf.Tensor:
    """The network's logits with column g of every layer on `devices[g]`, forward and backward.

    Walks the network's layers in order (the paper's net is a chain). A layer whose columns read
    every column (conv1 and conv3: `split_input=False`; fc6-fc8) gets all of them on each device,
    the exchange; the others keep each column on its device. Each column's input is cast to the
    layer's compute dtype on the device that reads it (Keras's autocast, without the layer call).
    """
    x: tf.Tensor | Columns = images
    last = network.layers[-1]
    for layer in network.layers[1:]:
        with tf.name_scope(layer.name):
            if isinstance(layer, GroupedConv2D) and not layer.split_input:
                x = _each_reads_all(layer, devices, x, layer.column)
            elif isinstance(layer, GroupedDense):
                x = _each_reads_all(
                    layer, devices, x, lambda g, x, layer=layer: layer.column(g, layer.flat(x))
                )
                if layer is last:
                    x = on_device(devices[0], lambda *ys: tf.concat(ys, axis=-1), *x)
            elif isinstance(layer, GroupedConv2D):
                x = _each_its_own(layer, devices, x, layer.column)
            elif isinstance(layer, LocalResponseNormalization):
                x = _each_its_own(
                    layer, devices, x, lambda g, part, layer=layer: layer.column(part)
                )
            elif isinstance(layer, GroupedMaxPool2D):
                x = _each_its_own(layer, devices, x, lambda g, part, layer=layer: layer.call(part))
            elif isinstance(layer, ColumnDropout):
                x = _dropout(layer, devices, x, training)
            else:  # Before the columns split (input_scale): on the default device.
                x = layer(x)
    return x


def _cast(x: tf.Tensor, layer: keras.layers.Layer) -> tf.Tensor:
    """Keras's autocast of a layer's floating input to its compute dtype (mixed precision)."""
    return tf.cast(x, layer.compute_dtype) if x.dtype.is_floating else x


def _each_its_own(
    layer: keras.layers.Layer,
    devices: Sequence[str],
    x: tf.Tensor | Columns,
    column: Callable[[int, tf.Tensor], tf.Tensor],
) -> Columns:
    parts = x if isinstance(x, list) else tf.split(x, len(devices), axis=-1)
    return [
        on_device(device, lambda part, g=g: column(g, _cast(part, layer)), part)
        for g, (device, part) in enumerate(zip(devices, parts))
    ]


def _each_reads_all(
    layer: keras.layers.Layer,
    devices: Sequence[str],
    x: tf.Tensor | Columns,
    column: Callable[[int, tf.Tensor], tf.Tensor],
) -> Columns:
    reads = read_all(x, devices)
    return [
        on_device(device, lambda *parts, g=g: column(g, _cast(_whole(parts), layer)), *reads[g])
        for g, device in enumerate(devices)
    ]


def _dropout(layer: ColumnDropout, devices: Sequence[str], x: Columns, training: bool) -> Columns:
    """Each column's own mask, drawn and applied on its device (a fresh seed per column)."""
    if not training or layer.rate == 0:
        return [on_device(d, layer.at_test_time, part) for d, part in zip(devices, x)]

    def drop(part: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        keep = tf.random.stateless_uniform(tf.shape(part), seed) >= layer.rate
        return layer.masked(_cast(part, layer), keep)

    outputs = []
    for device, part in zip(devices, x):
        seed = tf.cast(layer.seed_generator.next(), tf.int64)
        outputs.append(on_device(device, drop, part, seed))
    return outputs


def _whole(columns: Sequence[tf.Tensor]) -> tf.Tensor:
    """One tensor from the columns a device read, concatenated along channels (there)."""
    return columns[0] if len(columns) == 1 else tf.concat(list(columns), axis=-1)


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


def read_all(inputs: tf.Tensor | Columns, devices: Sequence[str]) -> list[Columns]:
    """What each device reads of an input that every column needs: all of it.

    `result[g]` holds every input column (or the one whole tensor, e.g. the images) for device g;
    each column's gradients are summed on its own device (`fan_out`).
    """
    if not isinstance(inputs, list):
        return [[inputs] for _ in devices]
    fanned = [fan_out(part, device, len(devices)) for part, device in zip(inputs, devices)]
    return [[copies[g] for copies in fanned] for g in range(len(devices))]
