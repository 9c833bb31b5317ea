"""What every command line shares: a quiet TensorFlow start-up and one-line user errors.

A run's console should show the project's messages and Keras's progress bar only. TensorFlow
prints C++ lines when it loads (oneDNN, CUDA drivers, CPU features: printed before absl's C++
logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not hide them) and an INFO line per
checkpoint shard; the entry points drop those unless `--verbosity` is 1 or more. Bad input (a
missing run or dataset, a bad file or flag value) ends the command with one line and exit code 2;
`--verbosity=1` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

from absl import app, flags
from absl import logging as absl_logging

# Start-up lines of TF's C++ runtime that every CPU-only (or any) machine prints; nothing else
# written to stderr while TensorFlow loads is dropped.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
    r"cudart_stub\.cc|Could not find cuda drivers|cpu_feature_guard\.cc|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler|"
    r"failed call to cuInit|cuda_platform\.cc|computation placer already registered|"
    r"Unable to register cu(DNN|FFT|BLAS) factory"
)
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, ImportError)


def _verbose() -> bool:
    """Whether `--verbosity`/`-v` asks for more than INFO (read before flags are parsed)."""
    for i, arg in enumerate(sys.argv[1:], start=1):
        match = re.fullmatch(r"--?(?:v|verbosity)(?:=(-?\d+))?", arg)
        if match:
            value = match.group(1) or (sys.argv[i + 1] if i + 1 < len(sys.argv) else "0")
            return value.lstrip("-").isdigit() and int(value) >= 1
    return False


@contextlib.contextmanager
def _without_startup_noise() -> Iterator[None]:
    """Captures file descriptor 2 (C++ writes there directly) and replays all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _STARTUP_NOISE.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


class _QuietTensorFlowInfo(logging.Filter):
    """Drops INFO records logged from inside TensorFlow's package (e.g. one per checkpoint)."""

    def __init__(self, package_dir: str):
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.package_dir)


def load_tensorflow_quietly() -> None:
    """Imports TensorFlow and initialises its devices without the start-up chatter (once)."""
    if "tensorflow" in sys.modules:
        return
    if _verbose():
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _without_startup_noise():
        import tensorflow as tf

        tf.config.list_physical_devices()  # Loads the device plugins (the cuInit line) now.
    package_dir = os.path.dirname(tf.__file__)
    absl_logging.get_absl_handler().addFilter(_QuietTensorFlowInfo(package_dir))
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def run(
    define_flags: Callable[[], None],
    main: Callable[[list[str]], None],
    user_errors: tuple[type[Exception], ...] = (),
    tensorflow: bool = True,
) -> None:
    """Defines the command's flags and runs `main` under absl, with user errors as one line.

    TensorFlow loads after the flags are parsed, so a bad flag fails in a fraction of a second.
    `user_errors` adds the command's own error types; `tensorflow=False` leaves loading TF to
    `main` (the training command validates its config first; a REST client needs only the
    standard library).
    """
    with _without_startup_noise():  # Should a command's flags import TensorFlow.
        define_flags()
    _list_in_help()

    def guarded(argv: list[str]) -> None:
        try:
            if tensorflow:
                load_tensorflow_quietly()
            main(argv)
        except (*USER_ERRORS, *user_errors, app.UsageError) as error:
            if flags.FLAGS.verbosity >= 1:
                raise
            print(f"Error: {_one_line(error)}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            import tensorflow as tf

            if not isinstance(error, tf.errors.OpError) or flags.FLAGS.verbosity >= 1:
                raise
            print(f"Error: {op_error_text(error.message)}", file=sys.stderr)  # e.g. strict_data.
            sys.exit(2)

    app.run(guarded)


def _list_in_help() -> None:
    """Makes the project's flags key flags of the main module: absl's --help and --helpshort list
    only those, and ours are defined in `alexnet_keras.cli`, not in the module that runs."""
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith("alexnet_keras."):
            for flag in module_flags:
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


# What TF wraps around an op's own message: where it ran (graph, function, node, iterator).
_OP_ERROR_WRAPPERS = re.compile(
    r"^Graph execution error: (Detected at node .*? <stack traces unavailable> )?|"
    r"\{\{function_node [^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]( name:( \S*)?)?|"
    r"Error in user-defined function passed to \S+ transformation with iterator: \S+: "
)


def op_error_text(message: str) -> str:
    """A TF op error's own message (e.g. strict_data's assertion) on one line, without TF's
    account of where it ran."""
    return _one_line(_OP_ERROR_WRAPPERS.sub(" ", _one_line(message)))


def _one_line(error: object) -> str:
    return " ".join(str(error).split())
