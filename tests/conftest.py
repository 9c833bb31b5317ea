"""Test setup: split the CPU into two logical devices before TensorFlow starts.

Multi-device code (MirroredStrategy, the paper's two-column "towers" placement) then runs for
real on `/cpu:0` and `/cpu:1`, as it would on two GPUs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture
def mixed_policy():
    """Sets a Keras mixed-precision policy for one test and restores float32 afterwards."""
    import keras

    def set_policy(name: str) -> None:
        keras.mixed_precision.set_global_policy(name)

    yield set_policy
    keras.mixed_precision.set_global_policy("float32")
