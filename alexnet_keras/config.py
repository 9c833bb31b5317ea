"""The training run's resolved, validated, frozen configuration, written next to the checkpoints.

Field names equal the training flags, so every validation error names the flag to fix.
Defaults are the paper's recipe (Sec. 5 and 4.1) wherever the paper gives one.
"""

from __future__ import annotations

import dataclasses
import json
import os

from alexnet_keras import constants

DEFAULT_MODEL_DIR = os.path.join("runs", "alexnet")  # Where train writes and export reads.
DEFAULT_EXPORT_BASE = "exports"  # Where export writes <model_name>/<version>/, TF Serving's layout.
DEFAULT_MODEL_NAME = "alexnet"
DEFAULT_SAVED_MODEL = os.path.join(DEFAULT_EXPORT_BASE, DEFAULT_MODEL_NAME)  # What predict reads.
# The network: the paper's (Fig. 2) or torchvision's "one weird trick" variant (for its weights).
ARCHITECTURES = ("paper", "torchvision")
# LRN's formula: the paper's (k=2, alpha not divided by n, within a column) or Caffe's (k=1,
# alpha divided by n, across both columns), which bvlc_alexnet's weights were trained with.
LRN_FORMS = ("paper", "caffe")
DISTRIBUTIONS = ("auto", "one_device", "mirrored", "towers", "multi_worker")
MIXED_PRECISIONS = ("auto", "none", "float16", "bfloat16")
INPUT_DTYPES = ("auto", "float32", "uint8")
LR_SCHEDULES = ("plateau", "step", "constant")
KERNEL_INITIALIZERS = ("paper", "he_normal", "glorot_uniform")
BIAS_INITIALIZERS = ("paper", "zeros")
CHECKPOINTS = ("best", "last")

# Resuming a run (training/resume.py): what may differ from the recorded config. Where and how
# the run executes, not what it computes:
FREE = frozenset({
    "data_dir", "manual_dir", "model_dir", "checkpoint_every_steps", "steps_per_execution",
    "strict_data",
    "distribution", "devices", "logical_devices", "jit_compile", "kernels",
    "deterministic",
})  # fmt: skip
# The same run, continued with other values: accepted with --allow_changes=NAME,...
ALLOWED_CHANGES = (
    "epochs", "ten_crop_eval", "final_checkpoint", "validation_steps", "plateau_patience",
    "max_lr_drops", "lr_boundaries", "mixed_precision", "input_dtype",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; see `alexnet_keras.train` for each flag's help."""

    dataset: str = "imagenet2012"
    data_dir: str | None = None
    manual_dir: str | None = None
    model_dir: str = DEFAULT_MODEL_DIR
    image_size: int = constants.IMAGE_SIZE
    resize_size: int | None = None  # None: image_size * 256 / 227, the paper's ratio.
    stats_file: str | None = None  # None: ImageNet's published mean and PCA.
    batch_size: int = 128  # Global, split across replicas.
    epochs: int = 90
    steps_per_epoch: int | None = None  # None: one pass over the training split.
    validation_steps: int | None = None  # None: the whole evaluation split.
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "plateau"
    plateau_patience: int = 3
    max_lr_drops: int = 3
    lr_boundaries: tuple[int, ...] = (30, 60, 80)  # Epochs, for lr_schedule=step.
    dropout: float = 0.5
    fc_units: int = constants.FC_UNITS
    input_scale: float = 1.0
    groups: int = 2
    use_lrn: bool = True
    architecture: str = "paper"
    lrn_form: str = "paper"
    dropout_form: str = "paper"  # Sec. 4.2: outputs times 1 - rate at test time.
    kernel_initializer: str = "paper"
    bias_initializer: str = "paper"
    augment: bool = True
    lighting_std: float = 0.1
    ten_crop_eval: bool = True
    distribution: str = "auto"
    devices: tuple[str, ...] = ()
    logical_devices: int = 0
    mixed_precision: str = "auto"  # bfloat16 on CPUs with native bf16, else float32.
    jit_compile: bool = False
    kernels: str = "auto"  # Faster TF kernels for the same layers (alexnet_keras.kernels).
    seed: int | None = None
    deterministic: bool = False
    strict_data: bool = False
    init_from: str | None = None  # A run directory or .keras file to start from (fine-tuning).
    freeze: tuple[str, ...] = ()  # Layers whose weights stay fixed.
    fine_tune_lr_factor: float = 0.1  # Loaded layers learn at this x learning_rate.
    checkpoint_every_steps: int = 1000
    steps_per_execution: int = 1  # Steps per host round trip: >1 keeps a fast GPU fed.
    input_dtype: str = "auto"  # uint8 crops finished on the device (not with a mean image).
    final_checkpoint: str = "best"

    def __post_init__(self) -> None:
        _check_positive(
            self, "image_size", "batch_size", "epochs", "checkpoint_every_steps",
            "steps_per_execution", "fc_units",
        )  # fmt: skip
        _check_positive(self, "steps_per_epoch", "validation_steps", "resize_size", optional=True)
        _check_choice(self, "architecture", ARCHITECTURES)
        _check_choice(self, "lrn_form", LRN_FORMS)
        _check_choice(self, "distribution", DISTRIBUTIONS)
        _check_choice(self, "mixed_precision", MIXED_PRECISIONS)
        _check_choice(self, "input_dtype", INPUT_DTYPES)
        _check_choice(self, "dropout_form", constants.DROPOUT_FORMS)
        _check_kernels(self.kernels)
        _check_choice(self, "lr_schedule", LR_SCHEDULES)
        _check_choice(self, "kernel_initializer", KERNEL_INITIALIZERS)
        _check_choice(self, "bias_initializer", BIAS_INITIALIZERS)
        _check_choice(self, "final_checkpoint", CHECKPOINTS)
        if self.image_size < constants.MIN_IMAGE_SIZE:
            _fail("image_size", self.image_size, f"an integer >= {constants.MIN_IMAGE_SIZE}")
        if self.resize_size is not None and self.resize_size < self.image_size:
            _fail("resize_size", self.resize_size, f"an integer >= --image_size={self.image_size}")
        if not self.dataset:
            _fail(
                "dataset", self.dataset, "imagenet2012, fashion_mnist, folder:PATH or a TFDS name"
            )
        if self.groups not in (1, 2):
            _fail("groups", self.groups, "1 or 2")
        for name in ("learning_rate", "input_scale", "fine_tune_lr_factor"):
            if getattr(self, name) <= 0:
                _fail(name, getattr(self, name), "a positive number")
        for name in ("momentum", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                _fail(name, getattr(self, name), "a number in [0, 1)")
        for name in ("weight_decay", "lighting_std", "plateau_patience", "max_lr_drops"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "a non-negative number")
        if self.logical_devices < 0 or self.logical_devices == 1:
            _fail("logical_devices", self.logical_devices, "0 (no split) or an integer >= 2")
        if list(self.lr_boundaries) != sorted(set(self.lr_boundaries)) or any(
            b <= 0 for b in self.lr_boundaries
        ):
            _fail("lr_boundaries", self.lr_boundaries, "increasing positive epoch numbers")
        if self.distribution == "towers" and self.groups != 2:
            _fail("groups", self.groups, "2 with --distribution=towers (one column per device)")
        if self.distribution == "towers" and self.devices and len(self.devices) != 2:
            _fail("devices", ",".join(self.devices), "exactly two devices for towers")
        if self.architecture == "torchvision" and self.groups != 1:
            _fail("groups", self.groups, "1 with --architecture=torchvision (one column)")
        if self.architecture == "torchvision" and self.use_lrn:
            _fail("use_lrn", self.use_lrn, "False (--nouse_lrn) with --architecture=torchvision")
        if self.lrn_form == "caffe" and not self.use_lrn:
            _fail("lrn_form", self.lrn_form, "paper with --nouse_lrn (there is no LRN to choose)")
        if self.mixed_precision == "float16" and self.distribution == "towers":
            _fail(
                "mixed_precision",
                self.mixed_precision,
                "none, bfloat16 or auto with --distribution=towers: float16's loss scaling "
                "checks every gradient inside one conditional, which gathers the second column's "
                "gradients on the first device and back each step (the executed graph showed it)",
            )
        if self.lrn_form == "caffe" and self.distribution == "towers":
            _fail(
                "lrn_form",
                self.lrn_form,
                "paper with --distribution=towers: Caffe's LRN normalizes across both columns, an "
                "exchange between the tower devices that the paper's layout never made",
            )
        if len(set(self.devices)) != len(self.devices):
            _fail("devices", ",".join(self.devices), "distinct devices")
        if self.distribution == "mirrored" and self.devices and self.batch_size % len(self.devices):
            _fail(
                "batch_size",
                self.batch_size,
                f"a multiple of the {len(self.devices)} replicas in --devices",
            )
        for name in ("manual_dir", "stats_file", "init_from"):  # data_dir is created if missing.
            path = getattr(self, name)
            if path is not None and not os.path.exists(path):
                _fail(name, path, "an existing path")

    def model_kwargs(self) -> dict:
        """`build_alexnet` arguments for this run (without num_classes and devices), so training,
        export and the tools build the same network."""
        return dict(
            input_shape=(self.image_size, self.image_size, 3),
            dropout=self.dropout,
            fc_units=self.fc_units,
            groups=self.groups,
            use_lrn=self.use_lrn,
            architecture=self.architecture,
            lrn_form=self.lrn_form,
            dropout_form=self.dropout_form,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            seed=self.seed,
            input_scale=self.input_scale,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Reads a config written by `to_json`; unknown keys (from newer versions) are errors."""
        values = json.loads(text)
        for name in ("lr_boundaries", "devices", "freeze"):
            if name in values:
                values[name] = tuple(values[name])
        values.setdefault("input_dtype", "float32")  # Runs from before the flag sent float32.
        values.setdefault("dropout_form", "inverted")  # Runs from before the flag: Keras's form.
        values.pop("conv3x3_algorithm", None)  # Replaced by --kernels (how, not what, it computes).
        return cls(**values)


def _fail(name: str, value: object, expected: str) -> None:
    raise ValueError(f"--{name}={value} is invalid: expected {expected}.")


def _check_positive(config: TrainConfig, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(config, name)
        if optional and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            _fail(name, value, "a positive integer")


def _check_kernels(kernels: str) -> None:
    names = kernels.split(",")
    if kernels not in ("auto", "reference") and not set(names) <= set(constants.KERNELS):
        _fail("kernels", kernels, f"auto, reference or some of {', '.join(constants.KERNELS)}")


def _check_choice(config: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        _fail(name, getattr(config, name), f"one of {', '.join(choices)}")
