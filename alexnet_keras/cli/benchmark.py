"""Measures training and inference speed against the machine's matrix-multiply ceiling.

    python tools/benchmark.py --what=train,infer,serve,input --batch_size=128 --json=bench.json

Every figure is the median of several timed windows after warm-up. Training runs the real
step (`trainer.compile_alexnet` + Keras `fit`, the code `alexnet_keras.train` runs); the FLOPs
per image are counted from the model (`alexnet_keras.flops`) as the direct convolutions' and
matmuls' multiply-adds, the paper's arithmetic, whatever algorithm runs them: where conv3-conv5
run by Winograd (`--kernels=...,winograd`), which needs fewer, the fraction of the ceiling can
pass 1. `--kernels` is the training flag: compare `--kernels=reference` with `auto`, or leave one
kernel out, to see what each buys on your machine. Prints figures; asserts nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import itertools
import json
import os
import re
import statistics
import tempfile
import time

from alexnet_keras import constants, cpu
from alexnet_keras.cli import common

common.load_tensorflow_quietly()  # Before TensorFlow is imported below.

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from alexnet_keras import flops, run_dir  # noqa: E402
from alexnet_keras.config import TrainConfig  # noqa: E402
from alexnet_keras.data import pipeline, stats  # noqa: E402
from alexnet_keras.serving import signatures  # noqa: E402
from alexnet_keras.training import precision, strategies, trainer  # noqa: E402

_WHAT = flags.DEFINE_list("what", ["train", "infer", "serve", "input"], "What to measure.")
_BATCH = flags.DEFINE_integer(
    "batch_size", 128, "Global training batch size (the paper's 128, train.py's default)."
)
_INFER_BATCH = flags.DEFINE_integer("infer_batch_size", 32, "Inference throughput batch size.")
_STEPS = flags.DEFINE_integer("steps", 4, "Steps (or calls) per timed window.", lower_bound=1)
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows; the median is reported.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 227, "Input size.")
_FC_UNITS = flags.DEFINE_integer(
    "fc_units", constants.FC_UNITS, "Units of fc6 and fc7, as the training flag.", lower_bound=1
)
_PRECISION = flags.DEFINE_enum(
    "mixed_precision",
    "none",
    ["auto", "none", "float16", "bfloat16"],
    "Compute dtype (as the training flag).",
)
_DISTRIBUTION = flags.DEFINE_enum(
    "distribution", "one_device", ["one_device", "mirrored", "towers"], "As the training flag."
)
_DEVICES = flags.DEFINE_list("devices", [], "As the training flag.")
_LOGICAL = flags.DEFINE_integer("logical_devices", 0, "As the training flag.")
_JIT = flags.DEFINE_bool("jit_compile", False, "XLA, as the training flag.")
_KERNELS = flags.DEFINE_string(
    "kernels", "auto", "As the training flag: auto, reference or a comma-separated list."
)
_GEMM_SIZE = flags.DEFINE_integer(
    "gemm_size", 2048, "Side of the square matmuls that measure the ceiling.", lower_bound=64
)
_JPEGS = flags.DEFINE_integer("jpegs", 256, "Synthetic 500x375 JPEGs for the end-to-end run.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
_AGAINST = flags.DEFINE_string(
    "against_kernels", None, "Time --kernels against these (e.g. reference) in one process, "
    "windows alternating: the training rate ratio (a VM's speed drifts between processes).",
)  # fmt: skip
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir",
    None,
    "Also trace --steps training steps with the TF profiler into this directory (TensorBoard's "
    "Profile tab) and print where their time went, per layer and per op type.",
)


def _median_rate(times: list[float], items: int) -> float:
    return items / statistics.median(times)


@functools.cache
def _gemm_chain(dtype: str, size: int, repeats: int):  # noqa: ANN202
    """A traced chain of `repeats` size^3 matmuls in `dtype` and its input (traced once)."""
    a = tf.cast(tf.random.normal((size, size)), dtype)

    @tf.function
    def chain(x: tf.Tensor) -> tf.Tensor:
        for _ in range(repeats):
            x = tf.matmul(x, a) * (1.0 / size)
        return x

    chain(a).numpy()
    return chain, a


def gemm_gflops(dtype: str = "float32", runs: int = 5, repeats: int = 8) -> float:
    """The machine's matrix-multiply rate in `dtype`: the ceiling a training rate is held to.

    bfloat16 runs on AMX or AVX512-BF16 units where the CPU has them (oneDNN), often several
    times the float32 rate; a run in mixed bfloat16 is measured against that ceiling.
    """
    size = _GEMM_SIZE.value
    chain, a = _gemm_chain(dtype, size, repeats)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        chain(a).numpy()
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 * repeats / statistics.median(times) / 1e9


class _StepTimer(keras.callbacks.Callback):
    """Records the wall time at the end of each training step."""

    def __init__(self):
        super().__init__()
        self.stamps = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.stamps.append(time.perf_counter())


def _fit_rate(model, dataset, batch: int) -> float:  # noqa: ANN001
    warmup = 3
    timer = _StepTimer()
    model.fit(
        dataset,
        steps_per_epoch=warmup + _WINDOWS.value * _STEPS.value,
        verbose=0,
        callbacks=[timer],
    )
    stamps = timer.stamps[warmup - 1 :]
    windows = [
        stamps[i + _STEPS.value] - stamps[i]
        for i in range(0, len(stamps) - 1, _STEPS.value)
        if i + _STEPS.value < len(stamps)
    ]
    return _median_rate(windows, batch * _STEPS.value)


def _paired_windows(model, dataset, batch: int, dtype: str) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """Training rates of --windows windows and the `dtype` ceiling around each (GFLOP/s).

    On a shared VM the machine's speed drifts within minutes (the AMX Xeon's bf16 ceiling moved
    1,487 -> 1,198 GFLOP/s within an hour), so each window of --steps steps is held to the mean
    of the ceiling measured just before and just after it, not to one measured minutes away.
    """
    model.fit(dataset, steps_per_epoch=3, verbose=0)  # Warm-up: tracing, oneDNN primitives.
    rates, ceilings = [], [gemm_gflops(dtype, runs=3)]
    for _ in range(_WINDOWS.value):
        timer = _StepTimer()
        # One untimed step first: the window starts at its end, after fit's own setup.
        model.fit(dataset, steps_per_epoch=1 + _STEPS.value, verbose=0, callbacks=[timer])
        rates.append(batch * _STEPS.value / (timer.stamps[-1] - timer.stamps[0]))
        ceilings.append(gemm_gflops(dtype, runs=3))
    return rates, [(before + after) / 2 for before, after in itertools.pairwise(ceilings)]


def _ab_windows(model, other, dataset, batch: int) -> list[float]:  # noqa: ANN001
    """Training-rate ratios model/other over --windows pairs of windows, run alternately (A B,
    B A, A B, ...), so a drift of the machine's speed weighs on both sides alike."""
    for m in (model, other):
        m.fit(dataset, steps_per_epoch=3, verbose=0)  # Warm-up: tracing, oneDNN primitives.

    def rate(m) -> float:  # noqa: ANN001
        timer = _StepTimer()
        m.fit(dataset, steps_per_epoch=1 + _STEPS.value, verbose=0, callbacks=[timer])
        return batch * _STEPS.value / (timer.stamps[-1] - timer.stamps[0])

    ratios = []
    for i in range(_WINDOWS.value):
        if i % 2:
            b, a = rate(other), rate(model)
        else:
            a, b = rate(model), rate(other)
        ratios.append(a / b)
    return ratios


def _profile(model, dataset, logdir: str) -> None:  # noqa: ANN001
    """Traces --steps training steps and prints the op time per layer and per op type.

    Times are summed over TF's inter-op threads (ops running side by side both count), so the
    shares, not the totals, are the figures to read; under the profiler a step runs slower.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    model.fit(dataset, steps_per_epoch=_STEPS.value, verbose=0)
    tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(max(paths, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    per_layer, per_type = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/op:OpType"
                if name.startswith("CpuExecutable::"):  # XLA: the fused update and LRN forward.
                    op_name, op_type = "", "XLA executable"
                elif ":" not in name or "::" in name:  # The executor's own spans enclose ops.
                    continue
                else:
                    op_name, op_type = name.rsplit(":", 1)
                layer = re.search(r"/(conv\d|lrn\d|pool\d|fc\d|drop\d)[_/]", op_name)
                milliseconds = event.duration_ps / 1e9 / _STEPS.value
                key = layer.group(1) if layer else "other (optimizer, loss, custom grads)"
                per_layer[key] += milliseconds
                per_type[op_type] += milliseconds
    for title, counter, rows in (("layer", per_layer, None), ("op type", per_type, 15)):
        total = sum(counter.values())
        print(f"Op time per step by {title} (trace in {logdir}):")
        for key, value in counter.most_common(rows):
            print(f"  {key:<40s} {value:8.1f} ms  {100 * value / total:5.1f}%")


def _write_jpegs(directory: str, count: int) -> str:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(directory, "train", f"class{i % 10}")
        os.makedirs(folder, exist_ok=True)
        # Smooth random images compress like photos (noise would make huge, slow JPEGs).
        small = rng.uniform(0, 255, (24, 32, 3)).astype(np.float32)
        image = tf.image.resize(small[None], (375, 500), method="bicubic")[0]
        jpeg = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90)
        tf.io.write_file(os.path.join(folder, f"{i}.jpg"), jpeg)
    return directory


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _LOGICAL.value:
        strategies.split_logical_devices(_LOGICAL.value)
    figures: dict[str, float | str] = {}
    what = set(_WHAT.value)
    size, batch = _IMAGE_SIZE.value, _BATCH.value
    config = TrainConfig(
        image_size=size,
        batch_size=batch,
        fc_units=_FC_UNITS.value,
        distribution=_DISTRIBUTION.value,
        devices=tuple(_DEVICES.value),
        mixed_precision=_PRECISION.value,
        jit_compile=_JIT.value,
        kernels=_KERNELS.value,
        logical_devices=_LOGICAL.value,
    )
    strategy, towers = strategies.make_strategy(config.distribution, config.devices)
    precision.set_precision(config.mixed_precision)
    kernel_policy = None if towers else trainer.resolve_kernels(config)
    figures["precision"] = precision.resolve_precision(config.mixed_precision)
    figures["cpu"] = cpu.describe()
    figures["gemm_gflops_float32"] = gemm_gflops("float32")
    figures["gemm_gflops_bfloat16"] = gemm_gflops("bfloat16")
    # The ceiling of the precision the convolutions and matmuls run in.
    ceiling_dtype = "bfloat16" if figures["precision"] == "bfloat16" else "float32"
    model = trainer.compile_alexnet(config, 1000, strategy, towers, kernel_policy)
    train_flops = flops.train_flops_per_image(model.network)
    figures["kernels"] = kernel_policy.describe() if kernel_policy else "towers: reference"
    figures["train_gflop_per_image"] = train_flops / 1e9

    rng = np.random.default_rng(0)
    images = rng.uniform(-120, 120, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, batch).astype(np.int32)
    synthetic = tf.data.Dataset.from_tensors((images, labels)).repeat()
    if "train" in what and _AGAINST.value is not None:  # The A/B alone.
        against = dataclasses.replace(config, kernels=_AGAINST.value)
        other_policy = trainer.resolve_kernels(against)
        other = trainer.compile_alexnet(config, 1000, strategy, towers, other_policy)
        ratios = _ab_windows(model, other, synthetic, batch)
        figures["against_kernels"] = other_policy.describe()
        figures["rate_ratio_to_against"] = statistics.median(ratios)
        figures["rate_ratios"] = ratios
    elif "train" in what:
        rates, ceilings = _paired_windows(model, synthetic, batch, ceiling_dtype)
        fractions = [r * train_flops / 1e9 / c for r, c in zip(rates, ceilings, strict=True)]
        figures["train_images_per_sec"] = statistics.median(rates)
        figures["train_gflops"] = figures["train_images_per_sec"] * train_flops / 1e9
        figures["train_ceiling_gflops"] = statistics.median(ceilings)
        # The median of the windows' own fractions: each against the ceiling around it.
        figures["train_fraction_of_ceiling"] = statistics.median(fractions)
        figures["train_fraction_min"], figures["train_fraction_max"] = (
            min(fractions),
            max(fractions),
        )
        figures["train_windows"] = [
            {"images_per_sec": r, "ceiling_gflops": c} for r, c in zip(rates, ceilings, strict=True)
        ]
        if _PROFILE_DIR.value:
            _profile(model, synthetic, _PROFILE_DIR.value)
    if "input" in what or ("train" in what and _AGAINST.value is None):
        with tempfile.TemporaryDirectory() as directory:
            _write_jpegs(directory, _JPEGS.value)
            for uint8_pixels, suffix in ((False, ""), (True, "_uint8")):
                jpeg_input = pipeline.build_dataset(
                    f"folder:{directory}", "train", batch_size=batch, training=True,
                    image_size=size, uint8_pixels=uint8_pixels,
                )  # fmt: skip
                if "input" in what:
                    figures[f"input{suffix}_images_per_sec"] = _input_rate(jpeg_input, batch)
                if "train" in what:
                    if uint8_pixels:  # --input_dtype=uint8: the step finishes the pixels.
                        model.uint8_pixels = True
                        model.make_train_function(force=True)
                    rate = _fit_rate(model, jpeg_input, batch)
                    figures[f"train_e2e{suffix}_images_per_sec"] = rate
    infer_images = rng.uniform(-120, 120, (_INFER_BATCH.value, size, size, 3)).astype(np.float32)
    if "infer" in what or "serve" in what:
        _infer(model, infer_images, figures)
    if "serve" in what:
        _serve(model, config, infer_images, figures)

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        if key in ("train_windows", "rate_ratios"):
            value = ", ".join(
                f"{w['images_per_sec']:.1f} img/s at {w['ceiling_gflops']:.0f}"
                if isinstance(w, dict) else f"{w:.3f}" for w in value
            )  # fmt: skip
        print(
            f"{key:<{width}}  {value:.3f}"
            if isinstance(value, float)
            else f"{key:<{width}}  {value}"
        )
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(figures, f, indent=2)


def _input_rate(dataset: tf.data.Dataset, batch: int) -> float:
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(_WINDOWS.value * _STEPS.value):
        next(iterator)
    return batch * _WINDOWS.value * _STEPS.value / (time.perf_counter() - start)


def _time_calls(fn, x, calls: int) -> float:  # noqa: ANN001
    fn(x)
    times = []
    for _ in range(_WINDOWS.value):
        start = time.perf_counter()
        for _ in range(calls):
            np.asarray(fn(x))
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _infer(model, images: np.ndarray, figures: dict) -> None:  # noqa: ANN001
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    figures["infer_images_per_sec"] = len(images) / _time_calls(predict, images, _STEPS.value)
    figures["latency_ms_batch1"] = 1000 * _time_calls(predict, images[:1], 4 * _STEPS.value)


def _serve(model, config: TrainConfig, images: np.ndarray, figures: dict) -> None:  # noqa: ANN001
    """The exported `predict_images` signature, reloaded, in float32 and in bfloat16 (the same
    weights): images/s at the inference batch and batch-1 latency."""
    labels = [str(i) for i in range(model.network.output_shape[-1])]
    pixels = tf.constant(np.clip(images + 120.0, 0, 255))  # 0..255, as served.
    with tempfile.TemporaryDirectory() as directory:
        weights = os.path.join(directory, "model.keras")
        model.network.save(weights)
        for precision_name in run_dir.INFERENCE_PRECISIONS:
            served = run_dir.load_inference_model(weights, config, len(labels), precision_name)
            functions = signatures.ServingFunctions(served, labels, stats.IMAGENET, images.shape[1])
            path = os.path.join(directory, precision_name)
            functions.export_archive().write_out(path, verbose=False)
            signature = tf.saved_model.load(path).signatures[signatures.PREDICT_IMAGES]
            call = lambda x, signature=signature: signature(images=x)["probabilities"]  # noqa: E731
            batch = 1 / _time_calls(call, pixels, _STEPS.value)
            figures[f"savedmodel_{precision_name}_images_per_sec"] = len(images) * batch
            figures[f"savedmodel_{precision_name}_latency_ms_batch1"] = 1000 * _time_calls(
                call, pixels[:1], 4 * _STEPS.value
            )


def main() -> None:
    """`python tools/benchmark.py` and the console script `alexnet-benchmark`."""
    common.run(lambda: None, _main)  # Its flags are defined at import, above.


if __name__ == "__main__":
    main()
