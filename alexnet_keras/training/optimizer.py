"""The paper's update rule (Sec. 5): SGD with momentum and weight decay INSIDE the update.

    v <- 0.9 * v - 0.0005 * lr * w - lr * dL/dw
    w <- w + v

Keras's `SGD(weight_decay=...)` is decoupled (w <- w - lr * wd * w, outside the momentum), which
is not the paper's rule. Here the decay is coupled, i.e. added to the gradient as L2 would be, so
it accumulates in the momentum buffer exactly as in the formula above.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_keras.training import keras_internals


def is_decayed(variable: keras.Variable) -> bool:
    """Weight decay applies to kernels (conv and fc weights), not biases, as in Caffe's recipe."""
    return "kernel" in variable.path.split("/")[-1]


@tf.function(jit_compile=True, autograph=False)
def _coupled_momentum_update(
    variable: tf.Variable,
    velocity: tf.Variable,
    gradient: tf.Tensor,
    learning_rate: tf.Tensor,
    momentum: float,
    decay: float,
) -> None:
    """v <- momentum * v - lr * (g + decay * w); w <- w + v (Sec. 5), as one XLA loop.

    A bfloat16 gradient (mixed precision) is converted to float32 inside the loop."""
    gradient = tf.cast(gradient, variable.dtype)
    new_velocity = momentum * velocity - learning_rate * (gradient + decay * variable)
    velocity.assign(new_velocity)
    variable.assign_add(new_velocity)


def _device(variable: keras.Variable | tf.Variable) -> str | None:
    """The device a (non-distributed) variable lives on; None under a distribution strategy, which
    places the copies of a mirrored variable itself."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    if isinstance(value, tf.distribute.DistributedValues):
        return None
    return value.device or None


def _local_copy(slot: tf.Variable, variable: tf.Variable) -> tf.Variable:
    """The copy of a (mirrored) optimizer slot on `variable`'s device.

    A MirroredStrategy update runs once per replica with that replica's copy of the variable, but
    a mirrored slot handed to a tf.function resolves to the first replica's copy in every replica:
    the second replica then read and wrote the first one's momentum, so the replicas diverged
    after one step (found by the mirrored-equals-one-device test).
    """
    if not isinstance(slot, tf.distribute.DistributedValues):
        return slot
    copies = tf.distribute.get_strategy().experimental_local_results(slot)
    return next(copy for copy in copies if copy.device == variable.device)


@keras.saving.register_keras_serializable(package="alexnet_keras")
class PaperSGD(keras_internals.GradientReduction, keras.optimizers.SGD):
    """SGD with momentum and coupled weight decay on kernels: the paper's Sec. 5 update.

    Args:
        learning_rate: epsilon (paper: 0.01).
        momentum: paper: 0.9.
        coupled_weight_decay: paper: 0.0005, multiplied by the learning rate inside the momentum.
        **kwargs: passed to `keras.optimizers.SGD` (not `weight_decay`, which is decoupled).
    """

    def __init__(
        self,
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        coupled_weight_decay: float = 5e-4,
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "PaperSGD applies `coupled_weight_decay`; Keras's decoupled `weight_decay` is not "
                f"the paper's rule. Received: weight_decay={kwargs['weight_decay']}"
            )
        if coupled_weight_decay < 0:
            raise ValueError(
                "`coupled_weight_decay` must be non-negative. "
                f"Received: coupled_weight_decay={coupled_weight_decay}"
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.coupled_weight_decay = coupled_weight_decay

    def build(self, variables: list) -> None:
        super().build(variables)
        # Decided here, where variables still carry their Keras paths ("conv2/kernel_0");
        # update_step may receive the backend's raw variable.
        self._decayed = [is_decayed(v) for v in variables]
        self._paths = [v.path for v in variables]
        self._lr_scales = [1.0] * len(variables)

    def scale_learning_rates(self, scales: dict[str, float]) -> None:
        """Multiplies the learning rate of the variables of the named layers, e.g. {"conv1": 0.1}
        (fine-tuning: loaded layers learn slower than new ones). Call before training starts."""
        self._lr_scales = [scales.get(path.split("/")[0], 1.0) for path in self._paths]

    def add_variable_from_reference(
        self,
        reference_variable: keras.Variable,
        name: str | None = None,
        initializer: str = "zeros",
    ) -> keras.Variable:
        """The momentum of a variable, on that variable's device (a tower's column stays there)."""
        with tf.device(_device(reference_variable)):
            return super().add_variable_from_reference(reference_variable, name, initializer)

    def update_step(self, gradient, variable, learning_rate):  # noqa: ANN001, ANN201
        with tf.device(_device(variable)):  # The whole update next to its variable (towers).
            return self._update_step(gradient, variable, learning_rate)

    def _update_step(self, gradient, variable, learning_rate):  # noqa: ANN001, ANN202
        index = keras_internals.variable_index(self, variable)
        decay = self.coupled_weight_decay if self._decayed[index] else 0.0
        if not decay or self.momentum == 0 or self.nesterov:  # Not the fused XLA update.
            gradient = tf.cast(gradient, variable.dtype)
        if self.momentum == 0 or self.nesterov:
            if decay:
                gradient = gradient + tf.cast(decay, variable.dtype) * variable
            return super().update_step(gradient, variable, learning_rate * self._lr_scales[index])
        # Keras's SGD takes five elementwise passes over each variable and the decay two more; for
        # 61M parameters that is memory-bound, ~10% of a CPU step. One fused loop reads w, g, v
        # and writes w, v: ResourceApplyKerasMomentum without decay, XLA with it (the kernel
        # plus a separate decay add was 43 ms for fc6 alone, the XLA loop 28 ms).
        momentum = _local_copy(self.momentums[index].value, variable)
        lr = tf.cast(learning_rate * self._lr_scales[index], variable.dtype)
        if decay:
            _coupled_momentum_update(variable, momentum, gradient, lr, self.momentum, decay)
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=momentum.handle,
            lr=lr,
            grad=gradient,
            momentum=tf.cast(self.momentum, variable.dtype),
            use_locking=False,
            use_nesterov=False,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config
