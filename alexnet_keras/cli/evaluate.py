"""Top-1/top-5 error of a run: `python -m alexnet_keras.evaluate --model_dir=DIR [--ten_crop]`.

Also the console script `alexnet-evaluate`. Uses the run's own config.json and stats.json, so the
images are preprocessed exactly as in training, and writes the same keys as training's final
evaluation.
"""

from __future__ import annotations

import os

from absl import app, flags

from alexnet_keras.cli import common
from alexnet_keras.config import DEFAULT_MODEL_DIR


def define_flags() -> None:
    flags.DEFINE_string("model_dir", DEFAULT_MODEL_DIR, "A training run's directory.")
    flags.DEFINE_bool("ten_crop", False, "Average 10 crops (Sec. 4.1), else the centre.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which saved model.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval split).")
    flags.DEFINE_integer("batch_size", 128, "Evaluation batch size.", lower_bound=1)
    flags.DEFINE_integer("steps", None, "Evaluate only this many batches.", lower_bound=1)
    flags.DEFINE_string("data_dir", None, "Override the run's --data_dir.")
    flags.DEFINE_string("manual_dir", None, "Override the run's --manual_dir.")
    flags.DEFINE_string("output", None, "Metrics file (default: <model_dir>/metrics.json).")


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (not flags): {' '.join(argv[1:])}")
    from alexnet_keras import run_files

    f = flags.FLAGS
    config = run_files.load_config(f.model_dir)  # A missing run fails before TensorFlow loads.
    path = run_files.model_file(f.model_dir, f.checkpoint)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint={f.checkpoint}: {path} does not exist yet.")
    common.load_tensorflow_quietly()
    from alexnet_keras import run_dir
    from alexnet_keras.data import pipeline, sources
    from alexnet_keras.training import evaluation

    data_dir = f.data_dir or config.data_dir
    manual_dir = f.manual_dir or config.manual_dir
    split = f.split or sources.dataset_info(config.dataset, data_dir, manual_dir).eval_split
    dataset = pipeline.build_dataset(
        config.dataset,
        split,
        batch_size=f.batch_size,
        training=False,
        image_size=config.image_size,
        resize_size=config.resize_size,
        stats=run_dir.load_stats(f.model_dir),
        data_dir=data_dir,
        manual_dir=manual_dir,
        ten_crop=f.ten_crop,
    )
    # As export does: rebuilt from the run's config in float32, without the run's device pins.
    class_names = run_files.load_class_names(f.model_dir)
    model = run_dir.load_inference_model(path, config, len(class_names))
    metrics = evaluation.evaluate_model(model, dataset, split, steps=f.steps)
    metrics["checkpoint"] = f.checkpoint
    output = f.output or os.path.join(f.model_dir, run_files.METRICS_FILE)
    evaluation.write_metrics(metrics, output)
    print(f"{evaluation.describe(metrics)} -> {output}")


def main() -> None:
    """`python -m alexnet_keras.evaluate` and the console script `alexnet-evaluate`."""
    common.run(define_flags, _main, tensorflow=False)


if __name__ == "__main__":
    main()
