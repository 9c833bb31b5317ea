"""The fully connected layers (fc6-fc8), split by output units into columns, and their dropout."""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import ops

from alexnet_keras import constants
from alexnet_keras.layers import columns


@keras.saving.register_keras_serializable(package="alexnet_keras")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` for 2D inputs: kept so that files saved by 0.1 load unchanged.

    Input shape: `(batch, input_dim)`. Output shape: `(batch, units)`.
    """

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 2:
            raise ValueError(f"Dense expects 2D inputs (batch, features). Received: {input_shape}")
        super().build(input_shape)


@keras.saving.register_keras_serializable(package="alexnet_keras")
class GroupedDense(keras.layers.Layer):
    """A fully connected layer split by output units into `groups` columns (fc6-fc8, Sec. 3.2).

    On the paper's two GPUs each held half of fc6's and fc7's 4096 units, and every unit read the
    whole previous layer (both columns). Here column g owns `kernel_g` [in, units_g] and `bias_g`
    (units_g = units / groups, the first columns taking one more when it does not divide), each
    its own draw from `kernel_initializer`. Inputs of rank > 2 are flattened (pool5's 6x6x256 maps,
    channels last, so the weights match `Flatten` + `Dense`).

    Args:
        units: total output units.
        groups: number of columns.
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer: as in `keras.layers.Dense`, per column.
        devices, merge_columns: accepted from files saved before 0.2 and not used (placement is
            outside the layers).

    Input shape: `(batch, ...)`. Output shape: `(batch, units)`.

    Example:
        >>> GroupedDense(4096, groups=2)(keras.ops.zeros((1, 6, 6, 256))).shape
        (1, 4096)
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
        devices: object = None,
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
        columns.check_legacy_devices(devices, groups)
        self.units = units
        self.groups = groups
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        # A faster kernel for the same result (`alexnet_keras.kernels`), set outside the layer.
        self.fast_call: Callable | None = None

    @property
    def column_units(self) -> list[int]:
        """Output units of each column."""
        base, extra = divmod(self.units, self.groups)
        return [base + (g < extra) for g in range(self.groups)]

    def build(self, input_shape: tuple) -> None:
        if any(d is None for d in input_shape[1:]):
            raise ValueError(f"GroupedDense needs a known input size. Received: {input_shape}")
        self.input_dim = math.prod(input_shape[1:])
        self.kernels, self.biases = [], []
        for g, units in enumerate(self.column_units):
            suffix = "" if self.groups == 1 else f"_{g}"
            self.kernels.append(
                self.add_weight(  # Cast where read: column() and the kernels.
                    name=f"kernel{suffix}",
                    shape=(self.input_dim, units),
                    initializer=columns.column_initializer(self.kernel_initializer, g),
                    autocast=False,
                    regularizer=self.kernel_regularizer,
                )
            )
            if self.use_bias:
                self.biases.append(
                    self.add_weight(
                        name=f"bias{suffix}",
                        shape=(units,),
                        initializer=columns.column_initializer(self.bias_initializer, g),
                        autocast=False,
                        regularizer=self.bias_regularizer,
                    )
                )

    def call(self, inputs: object) -> object:
        if self.fast_call is not None:
            return self.fast_call(self, inputs)
        x = self.flat(inputs)
        return columns.concat_channels([self.column(g, x) for g in range(self.groups)])

    def flat(self, x: object) -> object:
        """The input as [batch, input_dim] (pool5's maps flattened, channels last)."""
        return x if len(x.shape) == 2 else ops.reshape(x, (-1, self.input_dim))

    def column(self, g: int, x: object) -> object:
        """Column g's units from the flat input (every unit reads both columns' maps)."""
        y = ops.matmul(x, ops.cast(self.kernels[g], x.dtype))
        if self.use_bias:
            y = y + ops.cast(self.biases[g], y.dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.units)

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
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_keras")
class ColumnDropout(keras.layers.Dropout):
    """Dropout of fc6's and fc7's units (Sec. 4.2), in the paper's form or the inverted one.

    `form="paper"`: while training each unit is zeroed with probability `rate` and the others
    pass unchanged; at test time every output is multiplied by 1 - rate (the paper's 0.5), "a
    reasonable approximation to taking the geometric mean of the predictive distributions".
    `form="inverted"` (Keras, Caffe, torch): the kept units are divided by 1 - rate while training
    and the layer is the identity at test time. Both give the same function of the weights they
    were trained with, at inference; as a parametrisation of training they differ (the inverted
    form's layers after a dropout learn at 1 / (1 - rate)^2 times the paper's relative rate), so
    imported weights keep the form they were trained with. The default is "inverted" because
    every file saved before the option existed was trained that way.

    Args:
        rate: fraction of units dropped (paper: 0.5).
        form: "paper" or "inverted".
        seed: as `keras.layers.Dropout`.
        devices: accepted from files saved before 0.2 and not used (placement is outside layers).

    Input/output shape: any.
    """

    def __init__(self, rate: float, form: str = "inverted", devices: object = None, **kwargs):
        super().__init__(rate, **kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate}")
        if form not in constants.DROPOUT_FORMS:
            raise ValueError(
                f"`form` must be one of {constants.DROPOUT_FORMS}. Received: form={form!r}"
            )
        if self.noise_shape is not None:
            raise ValueError(
                f"`noise_shape` is not supported. Received: noise_shape={self.noise_shape}"
            )
        self.form = form
        # A replacement for the same computation (`alexnet_keras.kernels`), set outside the layer.
        self.fast_call: Callable | None = None

    def call(self, inputs: object, training: bool = False) -> object:
        if self.fast_call is not None:
            return self.fast_call(self, inputs, training)
        if not training or self.rate == 0:
            return self.at_test_time(inputs)
        keep = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator) >= self.rate
        return self.masked(inputs, keep)

    def at_test_time(self, x: object) -> object:
        """The output outside training: the paper's 0.5 scaling, or the identity (inverted)."""
        return x * (1.0 - self.rate) if self.form == "paper" and self.rate else x

    def masked(self, x: object, keep: object) -> object:
        """The training output for a boolean mask of the units kept."""
        kept = x / (1.0 - self.rate) if self.form == "inverted" else x
        return ops.where(keep, kept, ops.zeros_like(x))

    def get_config(self) -> dict:
        config = super().get_config()
        config["form"] = self.form
        return config
