"""The fully connected layers (fc6-fc8), split by output units into columns, and their dropout."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from alexnet_keras import cpu
from alexnet_keras.layers import columns

_PAD_COLUMNS = 16  # 64 bytes of float32: rows of 4 KiB + 64 B no longer alias in the caches.


def pads_kernel_columns(x: tf.Tensor, kernel: tf.Tensor) -> bool:
    """Whether `matmul` computes x @ kernel with `_PAD_COLUMNS` zero columns added to the kernel.

    On an AVX2 AMD EPYC (Zen 2) oneDNN's float32 matmul runs at 0.4-0.5x its rate when the
    kernel's rows are a multiple of 4 KiB (out % 1024 == 0: fc6's and fc7's 2048-unit columns):
    fc6's column 78 ms at batch 128, 38 ms with the kernel padded (its copy included), bit for
    bit the same result. The copy costs more than it saves below batch 32 (serving batches are
    unknown when traced, so never padded) and was measured only on AVX2 kernels.
    """
    return (
        kernel.dtype == tf.float32
        and kernel.shape[1] is not None
        and kernel.shape[1] % 1024 == 0
        and x.shape[0] is not None
        and x.shape[0] >= 32
        and cpu.runs_avx2_kernels()
    )


def transposes_input_gradient(kernel: tf.Tensor) -> bool:
    """Whether `matmul`'s input gradient is (W @ g^T)^T rather than TF's g @ W^T.

    TF's `MatMul(g, W, transpose_b=True)` runs 3.4x slower at fc6's shape than
    `MatMul(W, g, transpose_b=True)` plus a transpose of the small [in, batch] result on an AMX
    Xeon (70 vs 21 ms at batch 32) and 1.5x slower on an AVX512 Zen 4; on GPUs the two cost the
    same. oneDNN's AVX2 float32 kernels are the exception: there TF's form is the faster one
    (Zen 2, batch 128: fc6's column 35 vs 42 ms, fc7's 15 vs 18 ms).
    """
    return not (kernel.dtype == tf.float32 and cpu.runs_avx2_kernels())


@tf.custom_gradient
def matmul(x: tf.Tensor, kernel: tf.Tensor) -> tuple:
    """x @ kernel for x [batch, in] and kernel [in, out], with the CPU's faster input gradient.

    The input gradient's form is `transposes_input_gradient`'s choice; the kernel gradient is
    TF's. The forward pads the kernel's columns where `pads_kernel_columns` says that is faster.
    """

    def grad(upstream: tf.Tensor) -> tuple:
        if transposes_input_gradient(kernel):
            inputs_grad = tf.transpose(tf.matmul(kernel, upstream, transpose_b=True))
        else:
            inputs_grad = tf.matmul(upstream, kernel, transpose_b=True)
        kernel_grad = tf.matmul(x, upstream, transpose_a=True)
        return inputs_grad, kernel_grad

    if pads_kernel_columns(x, kernel):
        padded = tf.pad(kernel, [[0, 0], [0, _PAD_COLUMNS]])
        return tf.matmul(x, padded)[:, : kernel.shape[1]], grad
    return tf.matmul(x, kernel), grad


@keras.saving.register_keras_serializable(package="alexnet_keras")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` for 2D inputs whose backward pass uses `matmul` above.

    Same weights, arguments and config as Keras's layer (checkpoints are interchangeable).

    Input shape: `(batch, input_dim)`. Output shape: `(batch, units)`.
    """

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 2:
            raise ValueError(f"Dense expects 2D inputs (batch, features). Received: {input_shape}")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        outputs = matmul(inputs, tf.cast(self.kernel, self.compute_dtype))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, self.compute_dtype))
        return self.activation(outputs)


@keras.saving.register_keras_serializable(package="alexnet_keras")
class GroupedDense(keras.layers.Layer):
    """A fully connected layer split by output units into `groups` columns (fc6-fc8, Sec. 3.2).

    On the paper's two GPUs each held half of fc6's and fc7's 4096 units, and every unit read the
    whole previous layer (both columns). Here column g owns `kernel_g` [in, units_g] and `bias_g`
    (units_g = units / groups, the first columns taking one more when it does not divide), each
    its own draw from `kernel_initializer`. Inputs of rank > 2 are flattened (pool5's 6x6x256 maps,
    channels last, so the weights match `Flatten` + `Dense`). Without `devices` the columns' outputs
    are concatenated; with them ("towers") the layer takes a list of per-column tensors, each
    device concatenates them (the paper's exchange) and computes its columns' units, forward and
    backward, and the layer returns a list, or the concatenation on the first device when
    `merge_columns` (the logits). The input gradient uses `matmul`'s faster CPU form.

    Args:
        units: total output units.
        groups: number of columns.
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer: as in `keras.layers.Dense`, per column.
        devices: optional device per column.
        merge_columns: with `devices`, return one tensor (on the first device) instead of a list.

    Input shape: `(batch, ...)` (towers: a list of per-column tensors). Output shape:
    `(batch, units)` (towers without `merge_columns`: a list of `(batch, units_g)`).

    Example:
        >>> GroupedDense(4096, groups=2)(tf.zeros((1, 6, 6, 256))).shape
        TensorShape([1, 4096])
    """

    def __init__(
        self,
        units: int,
        groups: int = 2,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        bias_regularizer: str | keras.regularizers.Regularizer | None = None,
        devices: Sequence[str] | None = None,
        merge_columns: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive integer. Received: units={units}")
        if not isinstance(groups, int) or not 1 <= groups <= units:
            raise ValueError(
                f"`groups` must be an integer in [1, units]. Received: groups={groups}, "
                f"units={units}"
            )
        self.units = units
        self.groups = groups
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.devices = columns.check_devices(devices, groups)
        self.merge_columns = bool(merge_columns)

    @property
    def column_units(self) -> list[int]:
        """Output units of each column."""
        base, extra = divmod(self.units, self.groups)
        return [base + (g < extra) for g in range(self.groups)]

    def build(self, input_shape: tuple | list) -> None:
        shape = columns.whole_shape(input_shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(f"GroupedDense needs a known input size. Received: {input_shape}")
        self.input_dim = math.prod(shape[1:])
        self.kernels, self.biases = [], []
        for g, units in enumerate(self.column_units):
            suffix = "" if self.groups == 1 else f"_{g}"
            with tf.device(self.devices[g] if self.devices else None):
                self.kernels.append(
                    self.add_weight(  # Cast by columns.compute_weight.
                        name=f"kernel{suffix}",
                        shape=(self.input_dim, units),
                        initializer=columns.column_initializer(self.kernel_initializer, g),
                        autocast=False,
                        regularizer=self.kernel_regularizer,
                    )
                )
                if self.use_bias:
                    self.biases.append(
                        self.add_weight(  # Cast by columns.compute_weight.
                            name=f"bias{suffix}",
                            shape=(units,),
                            initializer=columns.column_initializer(self.bias_initializer, g),
                            autocast=False,
                            regularizer=self.bias_regularizer,
                        )
                    )
        self.built = True

    def _column(self, g: int, x: tf.Tensor) -> tf.Tensor:
        y = matmul(x, columns.compute_weight(self.kernels[g], x.dtype))
        if self.use_bias:
            y = tf.nn.bias_add(y, columns.compute_weight(self.biases[g], y.dtype))
        return y

    def _flat(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [-1, self.input_dim]) if x.shape.rank != 2 else x

    def call(self, inputs: tf.Tensor | list[tf.Tensor]) -> tf.Tensor | list[tf.Tensor]:
        if not self.devices:
            x = self._flat(columns.whole(inputs))
            y = columns.whole([self._column(g, x) for g in range(self.groups)])
            return y if self.activation is None else self.activation(y)
        reads = columns.read_all(inputs, self.devices)

        def column_fn(g: int) -> Callable[..., tf.Tensor]:
            def column(*parts: tf.Tensor) -> tf.Tensor:
                y = self._column(g, self._flat(columns.whole(parts)))
                return y if self.activation is None else self.activation(y)

            return column

        outputs = [
            columns.on_device(d, column_fn(g), *reads[g]) for g, d in enumerate(self.devices)
        ]
        if self.merge_columns:
            return columns.on_device(self.devices[0], lambda *ys: columns.whole(ys), *outputs)
        return outputs

    def compute_output_shape(self, input_shape: tuple | list) -> tuple | list:
        batch = columns.whole_shape(input_shape)[0]
        if self.devices and not self.merge_columns:
            return [(batch, units) for units in self.column_units]
        return (batch, self.units)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            groups=self.groups,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            devices=list(self.devices) if self.devices else None,
            merge_columns=self.merge_columns,
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_keras")
class ColumnDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` that also takes a list of per-column tensors (towers, Sec. 4.2).

    With `devices`, each column's mask is drawn and applied on its own device, so dropout and its
    gradient stay with the column. Without them it is Keras's layer.

    Args:
        rate: fraction of units dropped (paper: 0.5).
        devices: optional device per column.
        **kwargs: as `keras.layers.Dropout` (seed, noise_shape, name).

    Input/output shape: any; towers: a list of per-column tensors.
    """

    def __init__(self, rate: float, devices: Sequence[str] | None = None, **kwargs):
        super().__init__(rate, **kwargs)
        self.devices = tuple(devices) if devices else None

    def call(
        self, inputs: tf.Tensor | list[tf.Tensor], training: bool = False
    ) -> tf.Tensor | list[tf.Tensor]:
        if not isinstance(inputs, list | tuple):
            return super().call(inputs, training=training)
        if not training or self.rate == 0:
            return list(inputs)
        outputs = []
        for device, x in zip(self.devices or [None] * len(inputs), inputs):
            seed = tf.cast(self.seed_generator.next(), tf.int64)  # Fresh per column and step.
            outputs.append(columns.on_device(device, self._drop, x, seed))
        return outputs

    def _drop(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed)

    def compute_output_shape(self, input_shape: tuple | list) -> tuple | list:
        if columns.is_columns_shape(input_shape):
            return [tuple(s) for s in input_shape]
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config["devices"] = list(self.devices) if self.devices else None
        return config
