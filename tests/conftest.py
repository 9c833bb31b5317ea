"""Test setup: no downloads, and the CPU split into two logical devices before TensorFlow starts.

Multi-device code (MirroredStrategy, the paper's two-column "towers" placement) then runs for
real on `/cpu:0` and `/cpu:1`, as it would on two GPUs. No test can download: the package's own
download path is switched off for this process and every subprocess (ALEXNET_NO_DOWNLOADS), and
any connection to, or DNS look-up of, a non-loopback host fails at once, here and in every
subprocess (tests/no_network/sitecustomize.py). Temporary directories go as soon as
they are done with (a full-size run directory is 0.3-1.5 GB), except those of failed tests.
"""

import importlib.util
import os
import shutil
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["ALEXNET_NO_DOWNLOADS"] = "1"
# No network here nor in any process a test starts: tests/no_network/sitecustomize.py, which every
# subprocess imports at start-up from PYTHONPATH, and which this process loads now.
_NO_NETWORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no_network")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_NO_NETWORK, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)
_spec = importlib.util.spec_from_file_location(
    "no_network", os.path.join(_NO_NETWORK, "sitecustomize.py")
)
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))
import pytest  # noqa: E402

# Before TensorFlow, as in every command: where TF does not turn oneDNN on by itself (AVX2-only
# CPUs) the package does, and warns if TF came first. Here that is an error: this process's tests
# and the header's kernel choices must see the kernels the commands run.
with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)
    import alexnet_keras  # noqa: E402, F401
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


_SESSION = "session-"  # Directories of session fixtures: kept until the session ends.


@pytest.fixture(autouse=True, scope="module")
def _module_directories_removed(tmp_path_factory):
    """Removes the directories a module's fixtures made once the module is done, so the suite
    never holds more than one module's files (`tmp_path_retention_policy = failed` in setup.cfg
    already removes each passed test's own `tmp_path`); session fixtures' stay."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    for path in set(base.iterdir()) - before - _kept:
        if not path.name.startswith(_SESSION):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """`shared(name, build)`: `build(directory)` returns a JSON value; it runs once per pytest
    session, in whichever xdist worker asks first, and every other worker waits for it and gets
    the same value. For file-based set-up (runs, exports) that tests spread over both workers
    would otherwise build twice. Kept until the session ends."""
    import fcntl
    import json

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # Both workers'.

    def get(name: str, build):
        directory, done = root / (_SESSION + name), root / (_SESSION + name + ".json")
        with open(root / (_SESSION + name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
            if not done.exists():
                shutil.rmtree(directory, ignore_errors=True)  # A failed build's leftovers.
                directory.mkdir()
                done.write_text(json.dumps(build(str(directory))))
            return json.loads(done.read_text())

    return get


@pytest.fixture(scope="session")
def random_run(shared):
    """A tiny run directory as training writes it, with random weights (export_helpers)."""
    from export_helpers import write_run_dir

    return shared("random_run", write_run_dir)


@pytest.fixture(scope="session")
def random_export(random_run, shared):
    """`random_run` exported for TF Serving (no warmup file), shared by the modules that serve."""
    import dataclasses

    from alexnet_keras.serving import export

    def build(directory):
        source = export.resolve_source(random_run)
        return dataclasses.asdict(export.export_saved_model(source, directory, write_warmup=False))

    return export.ExportResult(**shared("random_export", build))


_DISK_GIB = 6  # The suite's peak of temporary files: 5.3 GiB measured (BUILD_NOTES, "Disk").


def pytest_sessionstart(session):
    """Refuses to start, in one line, where the slow tests' temporary files cannot fit: a full
    disk otherwise shows as dozens of unrelated failures minutes in."""
    import tempfile

    options = session.config.option
    if os.environ.get("PYTEST_XDIST_WORKER") or "not slow" in (options.markexpr or ""):
        return  # Checked once, by the controller; the quick loop writes little.
    base = options.basetemp or tempfile.gettempdir()
    while not os.path.exists(base):
        base = os.path.dirname(os.path.abspath(base))
    free = shutil.disk_usage(base).free / 2**30
    if free < _DISK_GIB:
        pytest.exit(
            f"the tests need {_DISK_GIB} GiB free for temporary files in {base}, which has "
            f"{free:.1f} GiB: free some space, or pass --basetemp=DIR on a larger disk",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_report_header(config):
    """The CPU and the kernels --kernels=auto picks on it: the paths this run's training tests
    take by default (every kernel is also tested forced, on every CPU, in test_kernels.py)."""
    from alexnet_keras import cpu, kernels

    lines = [f"cpu: {cpu.describe()}"]
    for dtype in ("float32", "bfloat16"):
        policy = kernels.resolve("auto", dtype)
        lines.append(f"kernels=auto in {dtype}: {policy.describe()}")
    return lines


# In CI (CI=true) a skipped test fails the run, but for the one thing CI cannot have: a test must
# not go green because torch or jax failed to install.
_CI_MAY_SKIP = ("tensorflow_model_server is not on PATH",)
_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in _CI_MAY_SKIP):
            _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") == "true" and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("CI") == "true" and _skipped:
        terminalreporter.write_line("CI may not skip these tests:", red=True)
        for line in _skipped:
            terminalreporter.write_line(f"  {line}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Slow tests first (a stable sort, so any shuffle stays within each half): pytest-xdist
    (setup.cfg) then hands the longest tests out first, and no worker is left running a long one
    at the end while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
