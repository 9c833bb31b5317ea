"""Trains AlexNet with the paper's recipe: `python -m alexnet_keras.train --flagfile=flags.txt`.

Also the console script `alexnet-train`.

Every flag defaults to the paper's value where the paper gives one (Sec. 4 and 5). The flags
are read once, here, into a validated frozen `TrainConfig`; nothing else reads FLAGS.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

from absl import app, flags

from alexnet_keras import config as config_lib
from alexnet_keras import constants
from alexnet_keras.cli import common
from alexnet_keras.data import folder

_D = config_lib.TrainConfig()  # The defaults, in one place.


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the training flags (absl already owns --log_dir, -v and --verbosity)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "dataset",
        _D.dataset,
        "imagenet2012, fashion_mnist (built-in demo), folder:PATH (PATH/<split>/"
        "<class>/*.jpg) or any TFDS image-classification name.",
        **fv,
    )
    flags.DEFINE_string("data_dir", _D.data_dir, "TFDS data directory (prepared datasets).", **fv)
    flags.DEFINE_string(
        "manual_dir",
        _D.manual_dir,
        "Directory holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
        "(imagenet2012) or the Fashion-MNIST IDX files.",
        **fv,
    )
    flags.DEFINE_string(
        "model_dir", _D.model_dir, "Checkpoints, logs, best/last models, metrics.", **fv
    )
    flags.DEFINE_integer("image_size", _D.image_size, "Crop size (paper: 227; min 67).", **fv)
    flags.DEFINE_integer(
        "resize_size",
        _D.resize_size,
        "Rescaled square size before cropping (default: image_size*256/227).",
        **fv,
    )
    flags.DEFINE_string(
        "stats_file",
        _D.stats_file,
        "Mean/PCA JSON from tools/compute_stats.py (default: ImageNet's).",
        **fv,
    )
    flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size (paper: 128).", **fv)
    flags.DEFINE_integer("epochs", _D.epochs, "Training epochs (paper: ~90).", **fv)
    flags.DEFINE_integer(
        "steps_per_epoch",
        _D.steps_per_epoch,
        "Steps per epoch (default: one pass over the training split).",
        **fv,
    )
    flags.DEFINE_integer(
        "validation_steps",
        _D.validation_steps,
        "Cap on validation batches per epoch (default: the whole split).",
        **fv,
    )
    flags.DEFINE_float(
        "learning_rate", _D.learning_rate, "Initial learning rate (paper: 0.01).", **fv
    )
    flags.DEFINE_float("momentum", _D.momentum, "SGD momentum (paper: 0.9).", **fv)
    flags.DEFINE_float(
        "weight_decay",
        _D.weight_decay,
        "Weight decay inside the momentum update, on kernels (paper: 0.0005).",
        **fv,
    )
    flags.DEFINE_enum(
        "lr_schedule",
        _D.lr_schedule,
        config_lib.LR_SCHEDULES,
        "plateau: /10 when val top-1 error stops improving (paper); step: /10 at "
        "--lr_boundaries; constant.",
        **fv,
    )
    flags.DEFINE_integer(
        "plateau_patience",
        _D.plateau_patience,
        "Epochs without a new best val error before the rate drops.",
        **fv,
    )
    flags.DEFINE_integer("max_lr_drops", _D.max_lr_drops, "Most drops (paper: 3).", **fv)
    flags.DEFINE_list(
        "lr_boundaries",
        [str(b) for b in _D.lr_boundaries],
        "Epochs at which lr_schedule=step divides the rate by 10.",
        **fv,
    )
    flags.DEFINE_float("dropout", _D.dropout, "Dropout rate of fc6 and fc7 (paper: 0.5).", **fv)
    flags.DEFINE_integer(
        "fc_units", _D.fc_units, "Units of fc6 and fc7 (paper: 4096; fewer for small data).", **fv
    )
    flags.DEFINE_float(
        "input_scale",
        _D.input_scale,
        "Multiplies the mean-subtracted 0..255 input inside the model (paper: 1; "
        "~0.0156 with he_normal or glorot_uniform init).",
        **fv,
    )
    flags.DEFINE_integer("groups", _D.groups, "2: the paper's two-column net; 1: one column.", **fv)
    flags.DEFINE_bool("use_lrn", _D.use_lrn, "Local response normalization (paper: on).", **fv)
    flags.DEFINE_enum(
        "architecture",
        _D.architecture,
        config_lib.ARCHITECTURES,
        "paper: Fig. 2; torchvision: torchvision's one-column variant (fine-tuning its weights).",
        **fv,
    )
    flags.DEFINE_enum(
        "lrn_form",
        _D.lrn_form,
        config_lib.LRN_FORMS,
        "paper: k=2, alpha 1e-4, within a column (Sec. 3.3); caffe: bvlc_alexnet's k=1, alpha/n.",
        **fv,
    )
    flags.DEFINE_enum(
        "dropout_form",
        _D.dropout_form,
        constants.DROPOUT_FORMS,
        "paper: zero units while training, multiply outputs by 1 - rate at test time (Sec. 4.2); "
        "inverted: divide kept units by 1 - rate while training (Keras, Caffe, torch).",
        **fv,
    )
    flags.DEFINE_enum(
        "kernel_initializer",
        _D.kernel_initializer,
        config_lib.KERNEL_INITIALIZERS,
        "paper: N(0, 0.01).",
        **fv,
    )
    flags.DEFINE_enum(
        "bias_initializer",
        _D.bias_initializer,
        config_lib.BIAS_INITIALIZERS,
        "paper: 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere.",
        **fv,
    )
    flags.DEFINE_bool(
        "augment", _D.augment, "Random crops, flips and PCA lighting (paper: on).", **fv
    )
    flags.DEFINE_float(
        "lighting_std", _D.lighting_std, "PCA lighting alpha std (paper: 0.1).", **fv
    )
    flags.DEFINE_bool(
        "ten_crop_eval",
        _D.ten_crop_eval,
        "Final evaluation averages 10 crops (paper), else the centre crop.",
        **fv,
    )
    flags.DEFINE_enum(
        "distribution",
        _D.distribution,
        config_lib.DISTRIBUTIONS,
        "auto: mirrored with >= 2 GPUs, else one device; towers: the paper's "
        "two-device model parallelism; multi_worker: TF_CONFIG cluster.",
        **fv,
    )
    flags.DEFINE_list(
        "devices", list(_D.devices), "Devices, e.g. /gpu:0,/gpu:1 or /cpu:0,/cpu:1.", **fv
    )
    flags.DEFINE_integer(
        "logical_devices",
        _D.logical_devices,
        "Split the first GPU (or the CPU) into this many logical devices.",
        **fv,
    )
    flags.DEFINE_enum(
        "mixed_precision",
        _D.mixed_precision,
        config_lib.MIXED_PRECISIONS,
        "auto: bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), else float32 (paper). "
        "LRN and the logits stay float32.",
        **fv,
    )
    flags.DEFINE_bool(
        "jit_compile", _D.jit_compile, "XLA on one device (off when distributed).", **fv
    )
    flags.DEFINE_string(
        "kernels",
        _D.kernels,
        "Faster TensorFlow kernels for the same layers: auto (those measured faster on this kind "
        "of host, printed at start), reference (every layer's own keras.ops call), or a "
        f"comma-separated list of {', '.join(constants.KERNELS)}. Not saved with the model; "
        "time yours with tools/benchmark.py --kernels=...",
        **fv,
    )
    flags.DEFINE_integer(
        "seed", _D.seed, "Seed for initialization, shuffling and augmentation.", **fv
    )
    flags.DEFINE_bool("deterministic", _D.deterministic, "Deterministic ops and input order.", **fv)
    flags.DEFINE_bool(
        "strict_data",
        _D.strict_data,
        "Stop at the first undecodable image (default: skip and count).",
        **fv,
    )
    flags.DEFINE_integer(
        "checkpoint_every_steps",
        _D.checkpoint_every_steps,
        "Steps between resumable checkpoints (also saved at each epoch end).",
        **fv,
    )
    flags.DEFINE_string(
        "init_from",
        _D.init_from,
        "Start from this run directory (its best.keras) or .keras file: layers with the same "
        "name and shapes are copied, fc8 starts new when the class count differs.",
        **fv,
    )
    flags.DEFINE_list(
        "freeze", list(_D.freeze), "Layers whose weights stay fixed, e.g. conv1,conv2.", **fv
    )
    flags.DEFINE_float(
        "fine_tune_lr_factor",
        _D.fine_tune_lr_factor,
        "With --init_from, loaded layers learn at this times --learning_rate, new ones at the "
        "full rate (Caffe's fine-tuning recipe: 1/10, the new classifier 10x faster).",
        **fv,
    )
    flags.DEFINE_integer(
        "steps_per_execution",
        _D.steps_per_execution,
        "Training steps per call from the host (Keras's steps_per_execution): more keeps a fast "
        "GPU busy; checkpoints and logs then happen at these boundaries.",
        **fv,
    )
    flags.DEFINE_enum(
        "input_dtype",
        _D.input_dtype,
        config_lib.INPUT_DTYPES,
        "What the training input sends to the device: uint8 crops and a per-image RGB shift "
        "(mean and lighting), cast and added in the step (4x fewer bytes), or float32 crops "
        "finished on the host. auto: uint8, float32 with a mean image (--stats_file). uint8 rounds "
        "the resized crops to whole levels, as the paper's stored 256x256 images were.",
        **fv,
    )
    flags.DEFINE_enum(
        "final_checkpoint",
        _D.final_checkpoint,
        config_lib.CHECKPOINTS,
        "Which model the final evaluation uses.",
        **fv,
    )


def define_run_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Flags of the command that are not part of the recorded run (not in TrainConfig)."""
    flags.DEFINE_list(
        "allow_changes",
        [],
        "Resuming into a --model_dir recorded with other values of these flags continues that run "
        f"with the new values (any of: {', '.join(config_lib.ALLOWED_CHANGES)}). Other changes "
        "need a new --model_dir.",
        flag_values=flag_values,
    )


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> config_lib.TrainConfig:
    """The one conversion of parsed flags into the frozen, validated config."""
    values = {}
    for field in config_lib.TrainConfig.__dataclass_fields__:
        values[field] = flag_values[field].value
    try:
        values["lr_boundaries"] = tuple(int(b) for b in values["lr_boundaries"])
    except ValueError:
        raise ValueError(
            f"--lr_boundaries={','.join(values['lr_boundaries'])} is invalid: expected "
            "comma-separated epoch numbers."
        ) from None
    values["devices"] = tuple(values["devices"])
    values["freeze"] = tuple(values["freeze"])
    for name in ("data_dir", "manual_dir", "model_dir", "stats_file", "init_from"):
        if values[name]:
            values[name] = os.path.expanduser(values[name])
    return config_lib.TrainConfig(**values)


def with_source_settings(
    config: config_lib.TrainConfig, flag_values: flags.FlagValues = flags.FLAGS
) -> config_lib.TrainConfig:
    """--init_from's settings without weights (Caffe's LRN, an input scale, the dropout form)
    for the flags the command line does not set; a flag that sets another value is refused by
    the run, naming it."""
    from alexnet_keras.training import fine_tune

    source = fine_tune.source_settings(config.init_from)
    taken = {
        name: value
        for name, value in source.items()
        if not flag_values[name].present and getattr(config, name) != value
    }
    if taken:
        shown = " ".join(f"--{name}={value}" for name, value in taken.items())
        print(f"--init_from={config.init_from}: training with its {shown}.")
    return dataclasses.replace(config, **taken)


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (not flags): {' '.join(argv[1:])}")
    config = config_from_flags()  # Bad values fail here, before TensorFlow loads,
    folder.image_folder(config.dataset)  # and so does a mistyped folder.
    common.load_tensorflow_quietly()
    if config.init_from:
        config = with_source_settings(config)
    if config.logical_devices:
        from alexnet_keras.training.strategies import split_logical_devices

        split_logical_devices(config.logical_devices)
    from alexnet_keras.training import callbacks
    from alexnet_keras.training.trainer import run

    ctrl_c = callbacks.StopOnCtrlC()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Not where it is ignored.
        signal.signal(signal.SIGINT, ctrl_c.handle_sigint)
    try:
        run(config, allow_changes=flags.FLAGS.allow_changes, callbacks=[ctrl_c])
    except (KeyboardInterrupt, Exception) as error:
        # After a Ctrl-C any error is the interruption: one that stops at once (a second, or one
        # outside fit) can land inside C code that called back into Python and come out as
        # another error ("SystemError: Objects/listobject.c:338: bad argument to internal
        # function", or "<built-in function __import__> returned a result with an exception set").
        interrupted = isinstance(error, KeyboardInterrupt) or ctrl_c.interrupted
        if not interrupted or flags.FLAGS.verbosity >= 1:
            raise
        print(
            f"Interrupted. Run the same command again to continue from the last checkpoint in "
            f"--model_dir={config.model_dir}.",
            file=sys.stderr,
        )
        sys.exit(130)  # 128 + SIGINT, as a shell reports it.


def main() -> None:
    """`python -m alexnet_keras.train` and the console script `alexnet-train`."""
    common.run(lambda: (define_flags(), define_run_flags()), _main, tensorflow=False)


if __name__ == "__main__":
    main()
