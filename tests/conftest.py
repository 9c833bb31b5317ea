"""Test setup: no downloads, and the CPU split into two logical devices before TensorFlow starts.

Multi-device code (MirroredStrategy, the paper's two-column "towers" placement) then runs for
real on `/cpu:0` and `/cpu:1`, as it would on two GPUs. No test can download: the package's own
download path is switched off for this process and every subprocess (ALEXNET_NO_DOWNLOADS), and
any connection to a non-loopback address fails here at once. Temporary directories go as soon as
they are done with (a full-size run directory is 0.3-1.5 GB), except those of failed tests.
"""

import ipaddress
import os
import shutil
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["ALEXNET_NO_DOWNLOADS"] = "1"
import alexnet_keras  # noqa: E402, F401  Before TensorFlow: the oneDNN default every command has.

_connect = socket.socket.connect


def _is_loopback(host):
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # A host name other than localhost.
        return False


def _loopback_only(self, address):
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        raise OSError(f"Tests may not use the network (tried to connect to {address[0]}).")
    return _connect(self, address)


socket.socket.connect = _loopback_only

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


_kept = set()  # Temporary directories of failed tests: left for a look.


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and "tmp_path" in getattr(item, "funcargs", {}):
        _kept.add(item.funcargs["tmp_path"])
    return report


@pytest.fixture(autouse=True, scope="module")
def _module_directories_removed(tmp_path_factory):
    """Removes the directories a module's fixtures made once the module is done, so the suite
    never holds more than one module's files (`tmp_path_retention_policy = failed` in setup.cfg
    already removes each passed test's own `tmp_path`)."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    for path in set(base.iterdir()) - before - _kept:
        shutil.rmtree(path, ignore_errors=True)
