"""Exports a trained run as a TF Serving SavedModel: `<export_base>/<model_name>/<version>/`.

    python tools/export.py                          # runs/alexnet/best.keras -> exports/alexnet/N

The version directory holds `saved_model.pb`, `variables/`, and `assets.extra/` (the warmup
requests, the class labels and export_info.json). It is written into a hidden temporary
directory next to it and renamed into place, so TF Serving, which polls the model directory for
numeric subdirectories, never sees a half-written version; a failed export removes everything it
created. `models.config` (model_config_list) and `batching_parameters.txt` are (re)written in
`<export_base>/`. Signatures: see `alexnet_keras.serving`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence

from absl import logging
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from alexnet_keras import keras_file as keras_file_lib
from alexnet_keras import run_dir, run_files
from alexnet_keras.config import DEFAULT_EXPORT_BASE, DEFAULT_MODEL_NAME, TrainConfig
from alexnet_keras.data import labels, stats
from alexnet_keras.serving import signatures, warmup

MODELS_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"
LABELS_FILE = "labels.txt"
EXPORT_INFO_FILE = "export_info.json"

# Server-side batching (TF Serving's --enable_batching): up to 32 requests merged within 2 ms.
# num_batch_threads = cores of a small serving machine; max_enqueued_batches bounds the queue
# so overload fails fast instead of growing latency without bound.
BATCHING = {
    "max_batch_size": 32,
    "batch_timeout_micros": 2000,
    "max_enqueued_batches": 100,
    "num_batch_threads": 4,
}


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """What to export: a checkpoint and the run's config, class names and statistics."""

    checkpoint: str
    config: TrainConfig
    class_names: tuple[str, ...]
    stats: stats.DatasetStats


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where an export went and how to serve it."""

    path: str
    version: int
    model_name: str
    export_base: str
    models_config: str
    batching_parameters: str
    commands: dict[str, str]


def _read_class_names(path: str) -> tuple[str, ...]:
    with open(path) as f:
        if path.endswith(".json"):
            return tuple(json.load(f))
        return tuple(line.rstrip("\n") for line in f if line.strip())


def resolve_source(
    model_dir: str | None = None,
    keras_file: str | None = None,
    checkpoint: str = "best",
    class_names: str | Sequence[str] | None = None,
    stats_file: str | None = None,
) -> ExportSource:
    """Finds the checkpoint, config, class names and stats of a run directory or `.keras` file.

    With `keras_file`, the config, class names and stats come from the run files saved inside it
    (`keras_file.save`), else from files next to it (as in a run directory); else the network's
    settings are read from its layers, class names from `class_names` (a list, or a .json/.txt
    file) and stats from `stats_file` (default ImageNet). `class_names` and `stats_file` win.
    """
    if (model_dir is None) == (keras_file is None):
        raise ValueError("Pass exactly one of --model_dir and --keras_file.")
    inside = {}
    if model_dir is not None:
        path = run_files.model_file(model_dir, checkpoint)
        directory = model_dir
        config = run_files.load_config(model_dir)
    else:
        path, directory = keras_file, os.path.dirname(os.path.abspath(keras_file))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--keras_file={path} does not exist.")
        inside = keras_file_lib.run_files_inside(path)
        if run_files.CONFIG_FILE in inside:
            try:
                config = TrainConfig.from_json(inside[run_files.CONFIG_FILE])
            except (ValueError, TypeError) as error:
                raise ValueError(f"--keras_file={path}: its config.json: {error}") from None
        elif os.path.exists(os.path.join(directory, run_files.CONFIG_FILE)):
            config = run_files.load_config(directory)
        else:  # Everything that decides the network's function, read from the file itself.
            try:
                config = TrainConfig(**keras_file_lib.settings(path))
            except ValueError as error:
                raise ValueError(f"--keras_file={path}: {error}") from None
    if not os.path.isfile(path):
        other = "last" if checkpoint == "best" else "best"
        if model_dir is not None and os.path.isfile(run_files.model_file(model_dir, other)):
            hint = f"Pass --checkpoint={other} to export {run_files.model_file(model_dir, other)}."
        else:  # Both are written at epoch ends (callbacks.ModelSaver).
            hint = "Train for at least one epoch with `python -m alexnet_keras.train`."
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist (--checkpoint={checkpoint}). {hint}"
        )
    if class_names is None and run_files.CLASS_NAMES_FILE in inside:
        class_names = json.loads(inside[run_files.CLASS_NAMES_FILE])
    if class_names is None:
        names_file = os.path.join(directory, run_files.CLASS_NAMES_FILE)
        if not os.path.exists(names_file):
            raise FileNotFoundError(
                f"No class names: {names_file} does not exist. Pass --class_names=FILE."
            )
        class_names = names_file
    if isinstance(class_names, str):
        class_names = _read_class_names(class_names)
    sibling_stats = os.path.join(directory, run_files.STATS_FILE)
    if stats_file is None and run_files.STATS_FILE in inside:
        data_stats = stats.DatasetStats.from_dict(json.loads(inside[run_files.STATS_FILE]))
    else:
        if stats_file is None and os.path.exists(sibling_stats):
            stats_file = sibling_stats
        if stats_file is None:
            logging.warning("No stats.json in or next to %s: using the ImageNet mean.", path)
        data_stats = stats.load_stats(stats_file)
    return ExportSource(path, config, tuple(class_names), data_stats)


def next_version(model_base: str) -> int:
    """One more than the largest numeric version directory (1 if there is none)."""
    if not os.path.isdir(model_base):
        return 1
    versions = [int(name) for name in os.listdir(model_base) if name.isdigit()]
    return max(versions, default=0) + 1


def _make_dirs(path: str) -> list[str]:
    """Creates `path` and missing parents; returns the directories created, deepest first."""
    created = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    for directory in reversed(created):
        os.mkdir(directory)
    return created


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def models_config_text(export_base: str) -> str:
    """A ModelServerConfig text proto listing every model directory under `export_base`.

    Each model directory with at least one numeric version becomes a `model_config_list` entry
    with its absolute `base_path` and platform "tensorflow" (what `--model_config_file` reads).
    """
    config = model_server_config_pb2.ModelServerConfig()
    for name in sorted(os.listdir(export_base)):
        base_path = os.path.abspath(os.path.join(export_base, name))
        if os.path.isdir(base_path) and any(v.isdigit() for v in os.listdir(base_path)):
            config.model_config_list.config.add(
                name=name, base_path=base_path, model_platform="tensorflow"
            )
    return text_format.MessageToString(config)


# TF Serving's BatchingParameters (tensorflow_serving/servables/tensorflow/
# session_bundle_config.proto: the same names, numbers and types), declared here because the
# tensorflow-serving-api wheel does not ship that proto's generated module.
_BATCHING_PROTO = """
name: "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"
package: "tensorflow.serving"
dependency: "google/protobuf/wrappers.proto"
syntax: "proto3"
message_type {
  name: "BatchingParameters"
  field { name: "max_batch_size" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.Int64Value" }
  field { name: "batch_timeout_micros" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.Int64Value" }
  field { name: "max_enqueued_batches" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.Int64Value" }
  field { name: "num_batch_threads" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.Int64Value" }
  field { name: "thread_pool_name" number: 5 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.StringValue" }
  field { name: "allowed_batch_sizes" number: 6 label: LABEL_REPEATED type: TYPE_INT64 }
}
"""


@functools.cache
def batching_parameters_class() -> type:
    """TF Serving's `tensorflow.serving.BatchingParameters` message class.

    The generated module when it is installed, else the message declared in `_BATCHING_PROTO`
    (in a private descriptor pool, so it cannot clash with a later import of the real one).
    """
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        pool = descriptor_pool.DescriptorPool()
        for proto in (
            descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb),
            text_format.Parse(_BATCHING_PROTO, descriptor_pb2.FileDescriptorProto()),
        ):
            pool.Add(proto)
        message = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        return message_factory.GetMessageClass(message)
    return session_bundle_config_pb2.BatchingParameters


def batching_parameters_text() -> str:
    """The BatchingParameters text proto of `BATCHING` (what `--batching_parameters_file` reads)."""
    parameters = batching_parameters_class()()
    for name, value in BATCHING.items():
        getattr(parameters, name).value = value
    return text_format.MessageToString(parameters)


def serving_commands(export_base: str, model_name: str) -> dict[str, str]:
    """The docker and tensorflow_model_server commands that serve this export base.

    Docker mounts the export base at the same absolute path, so one models.config (with absolute
    host paths) serves both. Ports: 8500 gRPC, 8501 REST (TF Serving's conventions).
    """
    base = os.path.abspath(export_base)
    config, batching = f"{base}/{MODELS_CONFIG_FILE}", f"{base}/{BATCHING_FILE}"
    flags = (
        f"{shlex.quote(f'--model_config_file={config}')} --enable_batching "
        f"{shlex.quote(f'--batching_parameters_file={batching}')}"
    )
    ports = "--port=8500 --rest_api_port=8501"
    mount = shlex.quote(f"{base}:{base}:ro")
    return {
        "docker": f"docker run --rm -p 8500:8500 -p 8501:8501 -v {mount} "
        f"tensorflow/serving {flags}",
        "tensorflow_model_server": f"tensorflow_model_server {ports} {flags}",
        "rest_example": f"curl http://localhost:8501/v1/models/{model_name}",
    }


def _write_assets_extra(directory: str, display: Sequence[str], info: dict) -> None:
    extra = os.path.join(directory, warmup.WARMUP_DIR)
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, LABELS_FILE), "w") as f:
        f.write("".join(f"{name}\n" for name in display))
    with open(os.path.join(extra, EXPORT_INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)


def export_saved_model(
    source: ExportSource,
    export_base: str = DEFAULT_EXPORT_BASE,
    model_name: str = DEFAULT_MODEL_NAME,
    version: int | None = None,
    ten_crop: bool = False,
    top_k: int = 5,
    write_warmup: bool = True,
    serving_precision: str = "float32",
) -> ExportResult:
    """Writes `<export_base>/<model_name>/<version>/` atomically plus the serving configs.

    `serving_precision="bfloat16"` stores the weights in bfloat16 (half the size, no per-call
    casts) for CPUs with AMX/AVX512-BF16 and GPUs with bf16 tensor cores; LRN, the logits and the
    softmax stay float32. The default float32 works everywhere.
    """
    if version is not None and version < 1:
        raise ValueError(f"--version must be a positive integer. Received: {version}")
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"--model_name must be a plain directory name. Received: {model_name!r}")
    # Everything that can fail on bad input happens before anything is written.
    model = run_dir.load_inference_model(
        source.checkpoint, source.config, len(source.class_names), serving_precision
    )
    display = labels.display_names(source.class_names)
    functions = signatures.ServingFunctions(
        model, display, source.stats, source.config.image_size, source.config.resize_size,
        ten_crop=ten_crop, top_k=top_k,
    )  # fmt: skip
    archive = functions.export_archive()
    if write_warmup:
        warmup.warmup_requests(model_name, source.config.image_size)  # Fails early if no extra.

    model_base = os.path.join(export_base, model_name)
    version = version or next_version(model_base)
    final = os.path.join(model_base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; pick another --version or leave it unset.")
    created = _make_dirs(model_base)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base)  # Not numeric: ignored.
    try:
        archive.write_out(tmp, verbose=False)
        info = {
            "checkpoint": os.path.abspath(source.checkpoint),
            "signatures": list(signatures.SIGNATURES),
            "image_size": functions.image_size,
            "resize_size": functions.resize_size,
            "ten_crop": ten_crop,
            "top_k": functions.top_k,
            "serving_precision": serving_precision,
            "stats_source": source.stats.source,
            "config": json.loads(source.config.to_json()),
        }
        _write_assets_extra(tmp, display, info)
        if write_warmup:
            warmup.write_warmup_file(tmp, model_name, source.config.image_size)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the model from a server's other user.
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:  # Deepest first; only the ones this export made.
            if os.path.isdir(directory) and not os.listdir(directory):
                os.rmdir(directory)
        raise
    models_config = os.path.join(export_base, MODELS_CONFIG_FILE)
    _write_atomically(models_config, models_config_text(export_base))
    batching = os.path.join(export_base, BATCHING_FILE)
    _write_atomically(batching, batching_parameters_text())
    return ExportResult(
        path=final, version=version, model_name=model_name, export_base=export_base,
        models_config=models_config, batching_parameters=batching,
        commands=serving_commands(export_base, model_name),
    )  # fmt: skip
