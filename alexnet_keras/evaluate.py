"""Top-1/top-5 error of a run: `python -m alexnet_keras.evaluate --model_dir=DIR [--ten_crop]`.

Uses the run's own config.json and stats.json, so the images are preprocessed exactly as in
training, and writes the same keys as training's final evaluation.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from alexnet_keras import callbacks as cb  # noqa: E402
from alexnet_keras import datasets as sources  # noqa: E402
from alexnet_keras import evaluation, pipeline, serving, stats  # noqa: E402
from alexnet_keras.config import (  # noqa: E402
    CLASS_NAMES_FILE,
    DEFAULT_MODEL_DIR,
    STATS_FILE,
    load_config,
)

_MODEL_DIR = flags.DEFINE_string("model_dir", DEFAULT_MODEL_DIR, "A training run's directory.")
_TEN_CROP = flags.DEFINE_bool("ten_crop", False, "Average 10 crops (Sec. 4.1), else the centre.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which saved model.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval split).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Evaluation batch size.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "Evaluate only this many batches.", lower_bound=1)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override the run's --data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Override the run's --manual_dir.")
_OUTPUT = flags.DEFINE_string("output", None, "Metrics file (default: <model_dir>/metrics.json).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (not flags): {' '.join(argv[1:])}")
    config = load_config(_MODEL_DIR.value)
    name = cb.BEST_FILE if _CHECKPOINT.value == "best" else cb.LAST_FILE
    path = os.path.join(_MODEL_DIR.value, name)
    if not os.path.exists(path):
        raise app.UsageError(f"--checkpoint={_CHECKPOINT.value}: {path} does not exist yet.")
    data_dir = _DATA_DIR.value or config.data_dir
    manual_dir = _MANUAL_DIR.value or config.manual_dir
    split = _SPLIT.value or sources.dataset_info(config.dataset, data_dir, manual_dir).eval_split
    dataset = pipeline.build_dataset(
        config.dataset,
        split,
        batch_size=_BATCH_SIZE.value,
        training=False,
        image_size=config.image_size,
        resize_size=config.resize_size,
        stats=stats.load_stats(os.path.join(_MODEL_DIR.value, STATS_FILE)),
        data_dir=data_dir,
        manual_dir=manual_dir,
        ten_crop=_TEN_CROP.value,
    )
    with open(os.path.join(_MODEL_DIR.value, CLASS_NAMES_FILE)) as f:
        num_classes = len(json.load(f))
    # As export does: rebuilt from the run's config in float32, without the run's device pins.
    model = serving.load_serving_model(path, config, num_classes)
    metrics = evaluation.evaluate_model(model, dataset, split, steps=_STEPS.value)
    metrics["checkpoint"] = _CHECKPOINT.value
    output = _OUTPUT.value or os.path.join(_MODEL_DIR.value, evaluation.METRICS_FILE)
    evaluation.write_metrics(metrics, output)
    print(
        f"{split} ({metrics['examples']} images, {metrics['crops']} crops): "
        f"top-1 error {metrics['top1_error']:.4f}, top-5 error {metrics['top5_error']:.4f} "
        f"-> {output}"
    )


if __name__ == "__main__":
    app.run(main)
