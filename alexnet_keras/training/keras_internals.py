"""Where training needs Keras 3.15's private optimizer API, kept in one adapter.

tests/test_optimizer.py pins it: a Keras release that renames or changes
these methods fails there, naming what changed, not somewhere inside a training step.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def variable_index(optimizer: keras.optimizers.Optimizer, variable: object) -> int:
    """`variable`'s position among those `optimizer` was built with (Keras or backend variable),
    as Keras's own SGD finds its momentum in `update_step` (`_get_variable_index`)."""
    return optimizer._get_variable_index(variable)


class GradientReduction:
    """Mixin for a TensorFlow-backend Keras optimizer: how gradients are summed across replicas
    before the update (Keras's `_all_reduce_sum_gradients`, called by `apply`).

    One replica (one device, or the towers): nothing to sum, and Keras's all-reduce would pass
    every gradient through one IdentityN on the first device, so a tower's gradients crossed to
    device 0 and back each step (measured on the executed graph). Several replicas: summed in
    the variables' float32 (a bfloat16 sum loses precision).
    """

    def _all_reduce_sum_gradients(self, grads_and_vars: list) -> list:
        if tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return list(grads_and_vars)
        grads_and_vars = [(g if g is None else tf.cast(g, v.dtype), v) for g, v in grads_and_vars]
        return super()._all_reduce_sum_gradients(grads_and_vars)
