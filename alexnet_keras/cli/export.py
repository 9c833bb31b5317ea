"""Exports a trained AlexNet for TF Serving (a thin CLI over `alexnet_keras.serving.export`).

    python tools/export.py                 # runs/alexnet (best.keras) -> exports/alexnet/<next>
    python tools/export.py --model_dir=runs/fmnist --checkpoint=last --version=3 --ten_crop
    python tools/export.py --keras_file=best.keras   # copied out of its run: its files are inside
    python tools/export.py --keras_file=other.keras --class_names=names.txt --stats_file=s.json

Takes ~10 s for a 1000-class model on 2 CPU cores. Prints the version directory written and the
exact commands that serve it (docker and tensorflow_model_server).
"""

from __future__ import annotations

import os

from absl import app, flags

from alexnet_keras.cli import common
from alexnet_keras.config import DEFAULT_EXPORT_BASE, DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME


def define_flags() -> None:
    flags.DEFINE_string(
        "model_dir",
        None,
        f"Training run directory (default: {DEFAULT_MODEL_DIR}, what "
        "`alexnet_keras.train --flagfile=flags.txt` writes).",
    )
    flags.DEFINE_string(
        "keras_file",
        None,
        "Export this .keras file instead of a run directory (its run's config, class names and "
        "stats are inside the files training and the importers write).",
    )
    flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint of --model_dir.")
    flags.DEFINE_string(
        "class_names", None, "Class names (.json list or one per line); default: the run's."
    )
    flags.DEFINE_string("stats_file", None, "Stats JSON; default: the run's stats.json.")
    flags.DEFINE_string("export_base", DEFAULT_EXPORT_BASE, "TF Serving model root.")
    flags.DEFINE_string("model_name", DEFAULT_MODEL_NAME, "Model name (a subdirectory).")
    flags.DEFINE_integer("version", None, "Version number (default: the next free one).")
    flags.DEFINE_bool(
        "ten_crop",
        False,
        "Average the paper's 10 crops in serving_default (Sec. 4.1; 10x compute).",
    )
    flags.DEFINE_integer("top_k", 5, "How many top classes the signatures return.")
    flags.DEFINE_bool("warmup", True, "Write assets.extra/tf_serving_warmup_requests.")
    flags.DEFINE_enum(
        "serving_precision",
        "float32",
        ["float32", "bfloat16"],
        "bfloat16: weights stored and computed in bfloat16 (LRN, logits, softmax float32), for "
        "CPUs with AMX/AVX512-BF16 or GPUs with bf16 tensor cores; float32 works everywhere.",
    )


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (not flags): {' '.join(argv[1:])}")
    from alexnet_keras.serving import export

    f = flags.FLAGS
    model_dir = f.model_dir
    if model_dir is None and f.keras_file is None:
        model_dir = DEFAULT_MODEL_DIR
    source = export.resolve_source(
        model_dir, f.keras_file, f.checkpoint, f.class_names, f.stats_file
    )
    result = export.export_saved_model(
        source,
        f.export_base,
        f.model_name,
        f.version,
        f.ten_crop,
        f.top_k,
        f.warmup,
        f.serving_precision,
    )
    print(f"Exported {source.checkpoint} to {os.path.abspath(result.path)}")
    print(f"Wrote {result.models_config} and {result.batching_parameters}")
    print("Serve it with Docker:")
    print(f"  {result.commands['docker']}")
    print("or with a local TF Serving binary:")
    print(f"  {result.commands['tensorflow_model_server']}")
    print(f"Check: {result.commands['rest_example']}")


def main() -> None:
    """`python tools/export.py` and the console script `alexnet-export`."""
    common.run(define_flags, _main)


if __name__ == "__main__":
    main()
