"""Imports pretrained AlexNet weights as a run directory (a thin CLI over
`alexnet_keras.importers.run_writer`), so export, evaluate, predict and visualize work on it.

    python tools/import_weights.py --format=caffe --weights=bvlc_alexnet.caffemodel \
        --model_dir=runs/bvlc_alexnet [--mean_file=ilsvrc_2012_mean.binaryproto]
    python tools/import_weights.py --format=torchvision --weights=alexnet-owt-7be5be79.pth \
        --model_dir=runs/torchvision_alexnet
    python tools/export.py --model_dir=runs/bvlc_alexnet --model_name=bvlc_alexnet

Takes ~10 s for the 61M parameters on 2 CPU cores (mostly writing best.keras).
"""

from __future__ import annotations

from absl import app, flags

from alexnet_keras.cli import common


def define_flags() -> None:
    flags.DEFINE_string(
        "format",
        None,
        "caffe (Caffe's bvlc_alexnet .caffemodel, V1 or V2) or torchvision (torchvision's "
        "alexnet() state_dict, .pth or .safetensors).",
    )
    flags.DEFINE_string("weights", None, "The weights file.")
    flags.DEFINE_string(
        "model_dir", None, "The run directory to write; must not exist or be empty."
    )
    flags.DEFINE_string(
        "mean_file",
        None,
        "caffe only: the mean image to subtract (ilsvrc_2012_mean.binaryproto or .npy, BGR "
        "[3, 256, 256]); default: its per-channel mean.",
    )
    flags.DEFINE_string(
        "class_names",
        None,
        "Class names in fc8's order (.json list or one per line); default, for 1000 classes: "
        "ImageNet's WordNet ids (sorted, the label order of both formats and TFDS).",
    )
    flags.DEFINE_string(
        "dataset", "imagenet2012", "The dataset config.json names, for evaluate (fine-tuned nets)."
    )


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (not flags): {' '.join(argv[1:])}")
    f = flags.FLAGS
    required = {
        "format": "caffe or torchvision",
        "weights": "the .caffemodel, .pth or .safetensors file",
        "model_dir": "the run directory to create",
    }
    for name, what in required.items():
        if not getattr(f, name):
            raise ValueError(f"--{name} is required: {what}")
    from alexnet_keras import importers

    importers.check_format(f.format)  # Before TensorFlow loads.
    common.load_tensorflow_quietly()
    from alexnet_keras.importers import run_writer

    result = run_writer.import_weights(
        f.format, f.weights, f.model_dir, f.mean_file, f.class_names, f.dataset
    )
    config = result.config
    print(
        f"Imported {f.format} weights {f.weights} into {result.model_dir}: {result.num_classes} "
        f"classes, architecture={config.architecture}, lrn_form={config.lrn_form}, "
        f"{config.image_size}x{config.image_size} input"
    )
    for convention in result.conventions:
        print(f"  {convention}")
    print(f"Export it: python tools/export.py --model_dir={result.model_dir}")


def main() -> None:
    """`python tools/import_weights.py`."""
    common.run(define_flags, _main, tensorflow=False)


if __name__ == "__main__":
    main()
