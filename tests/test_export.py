"""Export for TF Serving: layout, signatures, equality with the in-memory model, warmup, errors."""

import dataclasses
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import saved_model_checks
import tensorflow as tf
from export_helpers import (
    STATS,
    reference_probabilities,
    sample_images,
    training_like_jpegs,
    write_run_dir,
)
from fake_data import encode, smooth_image
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2
from train_helpers import CLASSES, REPO, SIZE, tiny_arrays, tiny_config, tiny_datasets

from alexnet_keras import cpu, keras_file, run_files
from alexnet_keras.data import pipeline
from alexnet_keras.run_dir import load_inference_model, load_stats
from alexnet_keras.serving import export, warmup
from alexnet_keras.serving import signatures as serving
from alexnet_keras.training import evaluation
from alexnet_keras.training.trainer import run

OUTPUTS = sorted(serving.OUTPUTS)
AMX_FLAGS = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile"
AVX2_FLAGS = "fpu sse2 avx avx2 fma"
OUTPUT_DTYPES = {
    "probabilities": "DT_FLOAT",
    "top_k_ids": "DT_INT32",
    "top_k_scores": "DT_FLOAT",
    "top_k_labels": "DT_STRING",
}


@pytest.fixture(scope="module")
def trained(shared):
    """A real tiny training run (mixed bfloat16, columns pinned to two devices) and its export."""

    def build(directory):
        model_dir = os.path.join(directory, "run")
        config = tiny_config(
            model_dir, distribution="towers", devices=("/cpu:0", "/cpu:1"),
            mixed_precision="bfloat16", seed=1,
        )  # fmt: skip
        try:
            run(config, tf.distribute.get_strategy(), tiny_datasets(steps=2))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        exported = export.export_saved_model(
            export.resolve_source(model_dir), os.path.join(directory, "exports")
        )
        return model_dir, dataclasses.asdict(exported)

    model_dir, exported = shared("export_trained", build)
    return model_dir, export.ExportResult(**exported)


@pytest.fixture(scope="module")
def loaded(trained):
    return tf.saved_model.load(trained[1].path)


@pytest.fixture(scope="module")
def reference_model(trained):
    source = export.resolve_source(trained[0])
    return load_inference_model(source.checkpoint, source.config, len(CLASSES))


@pytest.fixture(scope="module")
def float32_run(shared):
    """A float32 one-device run, so its own evaluation computes as serving does (the bfloat16
    `trained` run cannot match float32 serving to 1e-5), exported with the centre crop and with
    the paper's 10 crops. At lr 0.01 its 2 steps leave unsaturated answers that depend on the
    image (below 0.005 they hardly differ), so equal outputs mean something."""

    def build(directory):
        model_dir = os.path.join(directory, "run")
        config = tiny_config(model_dir, seed=3, learning_rate=0.01)
        run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=2))
        base, source = os.path.join(directory, "exports"), export.resolve_source(model_dir)
        paths = [
            export.export_saved_model(
                source, base, f"crops_{10 if ten_crop else 1}", ten_crop=ten_crop,
                write_warmup=False,
            ).path
            for ten_crop in (False, True)
        ]  # fmt: skip
        return model_dir, paths

    model_dir, (centre, ten_crops) = shared("export_float32_run", build)
    paths = {False: centre, True: ten_crops}
    return (
        model_dir,
        {ten_crop: tf.saved_model.load(path) for ten_crop, path in paths.items()},
        paths,
    )


def _parse_models_config(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())


def _parse_batching_parameters(path):
    with open(path) as f:
        return text_format.Parse(f.read(), export.batching_parameters_class()())


def _set_fields(message):
    return {field.name: value for field, value in message.ListFields()}


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.slow
def test_layout_configs_and_commands(trained):
    model_dir, result = trained
    assert result.version == 1 and result.path == os.path.join(result.export_base, "alexnet", "1")
    assert sorted(os.listdir(os.path.dirname(result.path))) == ["1"]  # No temporary left.
    for name in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(result.path, name)), name
    with open(os.path.join(result.path, "assets.extra", "labels.txt")) as f:
        assert f.read().split() == list(CLASSES)
    (entry,) = _parse_models_config(result.models_config).model_config_list.config
    assert _set_fields(entry) == {
        "name": "alexnet",
        "base_path": os.path.abspath(os.path.dirname(result.path)),
        "model_platform": "tensorflow",
    }
    batching = _parse_batching_parameters(result.batching_parameters)
    assert {name: value.value for name, value in _set_fields(batching).items()} == {
        "max_batch_size": 32,
        "batch_timeout_micros": 2000,
        "max_enqueued_batches": 100,
        "num_batch_threads": 4,
    }
    assert result.commands["docker"].startswith("docker run")
    assert "tensorflow/serving --model_config_file=" in result.commands["docker"]
    assert "--rest_api_port=8501" in result.commands["tensorflow_model_server"]


def test_the_readmes_serving_commands_are_the_ones_export_prints():
    """Each of README's docker, tensorflow_model_server and curl lines, for exports/ under a
    directory with a space, split as the shell splits them, is what `serving_commands` prints:
    no experimental or XLA flag, and quoted paths."""
    kinds = {"docker run": "docker", "tensorflow_model_server": "tensorflow_model_server",
             "curl": "rest_example"}  # fmt: skip
    pwd = "/srv/my models"
    commands = export.serving_commands(os.path.join(pwd, "exports"), "alexnet")
    with open(os.path.join(REPO, "README.md")) as f:
        found = [
            (kinds[kind], shlex.split(line.split("#")[0].replace("$PWD", pwd)))
            for line in f.read().splitlines()
            for kind in kinds
            if line.startswith(kind)
        ]
    assert sorted({kind for kind, _ in found}) == sorted(kinds.values())
    for kind, words in found:
        assert words == shlex.split(commands[kind]), kind
        assert not [word for word in words if "experimental" in word or "xla" in word]


def test_models_config_is_a_model_server_config_of_every_versioned_model(tmp_path, monkeypatch):
    """Parsed back with TF Serving's own ModelServerConfig: one entry per model directory that has
    a numeric version, absolute base paths (from a relative export base), names that need
    escaping in text format (an f-string would have written a broken file)."""
    monkeypatch.chdir(tmp_path)
    for version_dir in (
        "alexnet/1",
        "alexnet/2",
        "demo/3",
        'my "best" model/1',
        "unfinished/.tmp-1",
    ):
        os.makedirs(os.path.join("exports", version_dir))
    (tmp_path / "exports" / "notes.txt").write_text("not a model")
    config = text_format.Parse(
        export.models_config_text("exports"), model_server_config_pb2.ModelServerConfig()
    )
    assert [field.name for field, _ in config.ListFields()] == ["model_config_list"]
    entries = [_set_fields(entry) for entry in config.model_config_list.config]
    assert entries == [
        {
            "name": name,
            "base_path": str(tmp_path / "exports" / name),
            "model_platform": "tensorflow",
        }
        for name in ("alexnet", "demo", 'my "best" model')
    ]


def test_batching_parameters_are_tf_servings_message():
    """The file parses as TF Serving's BatchingParameters: its proto's field names, numbers and
    wrapper types (session_bundle_config.proto), the same wire bytes, no unknown field accepted."""
    message = export.batching_parameters_class()
    assert message.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    fields = {f.name: (f.number, f.message_type and f.message_type.full_name)
              for f in message.DESCRIPTOR.fields}  # fmt: skip
    expected = {
        "max_batch_size": (1, "google.protobuf.Int64Value"),
        "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
        "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
        "num_batch_threads": (4, "google.protobuf.Int64Value"),
        "thread_pool_name": (5, "google.protobuf.StringValue"),
    }
    assert {name: fields[name] for name in expected} == expected
    parsed = text_format.Parse(export.batching_parameters_text(), message())
    # Field 1 {value(1): 32}, field 2 {2000}, field 3 {100}, field 4 {4}, hand-encoded.
    wire = b"\x0a\x02\x08\x20\x12\x03\x08\xd0\x0f\x1a\x02\x08\x64\x22\x02\x08\x04"
    assert parsed.SerializeToString(deterministic=True) == wire
    documented = "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
    assert text_format.Parse(documented, message()).max_batch_size.value == 128  # TF Serving docs.
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse("max_batch_sise { value: 32 }", message())


def test_serving_graph_is_float32_without_device_pins(trained):
    """The run trained in mixed bfloat16 on pinned towers; none of that may reach serving."""
    graph = open(os.path.join(trained[1].path, "saved_model.pb"), "rb").read()
    assert b"CPU:1" not in graph and b"cpu:1" not in graph
    assert b"mixed_bfloat16" not in graph


@pytest.mark.slow
def test_every_export_loads_on_a_stock_tf_serving(trained, bfloat16_export, float32_run):
    """No function or node needs XLA (a stock tensorflow_model_server refuses them), no op that
    `saved_model_cli scan` denylists, every signature valid: float32 and bfloat16 exports of a
    run trained with towers in mixed bfloat16, and a one-device float32 run's (centre crop and 10
    crops). Plain TF ops: one convolution per column and LRN as the paper writes it."""
    for path in (trained[1].path, bfloat16_export.path, *float32_run[2].values()):
        saved_model_checks.assert_servable(path)
    assert "Conv2D" in saved_model_checks.op_types(trained[1].path)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_export_does_not_depend_on_the_exporting_cpu(trained, tmp_path, monkeypatch, precision):
    """The same run exported as if on an AMX Xeon, an AVX2-only EPYC and an unknown CPU: the same
    op types (the export builds the reference layers; no CPU rule reaches it), in each serving
    precision."""
    found = []
    for name, flags in (("amx", AMX_FLAGS), ("avx2", AVX2_FLAGS), ("unknown", None)):
        text = "" if flags is None else f"model name\t: {name}\nflags\t\t: {flags}\n"
        monkeypatch.setattr(cpu, "_info", lambda text=text: text)
        result = export.export_saved_model(
            export.resolve_source(trained[0]), str(tmp_path / name), write_warmup=False,
            serving_precision=precision,
        )  # fmt: skip
        found.append(saved_model_checks.op_types(result.path))
    assert found[0] == found[1] == found[2]


@pytest.mark.slow
def test_saved_model_cli_shows_documented_signatures(trained):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--all", "--dir", trained[1].path], capture_output=True, text=True,
        timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    ).stdout  # fmt: skip
    blocks = {
        block.split("']")[0]: block for block in shown.split("signature_def['")[1:]
    }  # name -> its text
    expected_inputs = {
        "serving_default": ("image_bytes", "DT_STRING", "(-1)"),
        "predict_images": ("images", "DT_FLOAT", f"(-1, {SIZE}, {SIZE}, 3)"),
        "predict_images_uint8": ("images", "DT_UINT8", f"(-1, {SIZE}, {SIZE}, 3)"),
    }
    for name, (input_name, dtype, shape) in expected_inputs.items():
        block = blocks[name]
        assert f"inputs['{input_name}']" in block and dtype in block and shape in block
        assert "Method name is: tensorflow/serving/predict" in block
        for output, out_dtype in OUTPUT_DTYPES.items():
            part = block.split(f"outputs['{output}']")[1]
            assert out_dtype in part.split("name:")[0] and f"(-1, {len(CLASSES)})" in part


@pytest.mark.parametrize("batch", [1, 3])
def test_serving_default_equals_in_memory_model(loaded, reference_model, trained, batch):
    images = sample_images()[:batch]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    stats_used = export.resolve_source(trained[0]).stats
    expected = reference_probabilities(reference_model, stats_used, images)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    ids = outputs["top_k_ids"].numpy()
    np.testing.assert_array_equal(ids[:, 0], expected.argmax(axis=1))
    labels = outputs["top_k_labels"].numpy().astype(str)
    np.testing.assert_array_equal(labels, np.array(CLASSES)[ids])
    np.testing.assert_allclose(
        outputs["top_k_scores"].numpy(), np.take_along_axis(expected, ids, axis=1), atol=1e-5
    )


def test_predict_images_equal_serving_default(loaded, trained):
    """Centre crops sent as pixels give what the same images give as bytes (float and uint8)."""
    from alexnet_keras.data import geometry, pixels

    images = sample_images()
    crops = [
        geometry.center_crop(
            geometry.resize_shorter_and_center_crop(pixels.decode_image(data), 76), SIZE
        )
        for data in images
    ]
    crops = tf.stack(crops)
    by_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    by_float = loaded.signatures["predict_images"](images=crops)
    np.testing.assert_allclose(by_float["probabilities"], by_bytes["probabilities"], atol=1e-5)
    pixels = tf.cast(tf.round(crops), tf.uint8)
    by_uint8 = loaded.signatures["predict_images_uint8"](images=pixels)
    expected = loaded.signatures["predict_images"](images=tf.cast(pixels, tf.float32))
    np.testing.assert_allclose(by_uint8["probabilities"], expected["probabilities"], atol=1e-6)


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "ten_crop"])
def test_serving_default_equals_the_evaluation_pipeline_on_the_same_jpegs(
    float32_run, tmp_path, ten_crop
):
    """JPEG files through the evaluation pipeline (`build_dataset(training=False)`, as `evaluate
    [--ten_crop]` and training's final evaluation read them) and the run's best.keras, against
    the export's serving_default on the same bytes: probabilities to 1e-5 (float32 on both
    sides, the same ops; measured 0), and the top-1 count `evaluate_model` reports."""
    model_dir, exports, _ = float32_run
    jpegs, classes = training_like_jpegs(n=2)  # 90x120 JPEGs of classes 0 and 1.
    by_label = dict(zip(classes.tolist(), jpegs))
    for label, data in by_label.items():  # Class folders a/ and b/: labels 0 and 1.
        os.makedirs(tmp_path / "test" / CLASSES[label])
        (tmp_path / "test" / CLASSES[label] / f"{label}.jpg").write_bytes(data)
    config = run_files.load_config(model_dir)
    dataset = pipeline.build_dataset(
        f"folder:{tmp_path}", "test", batch_size=2, training=False, image_size=config.image_size,
        resize_size=config.resize_size, stats=load_stats(model_dir), ten_crop=ten_crop,
    )  # fmt: skip
    ((images, labels),) = list(dataset)
    assert images.shape == (2,) + ((10,) if ten_crop else ()) + (SIZE, SIZE, 3)
    model = keras.saving.load_model(os.path.join(model_dir, "best.keras"))
    evaluated = evaluation.crop_probabilities(model, images).numpy()
    ordered = [by_label[int(label)] for label in labels]
    served = exports[ten_crop].signatures["serving_default"](image_bytes=tf.constant(ordered))
    served = served["probabilities"].numpy()
    np.testing.assert_allclose(served, evaluated, rtol=0, atol=1e-5)
    assert np.abs(served[0] - served[1]).max() > 1e-3  # Two answers, 100x the tolerance apart.
    metrics = evaluation.evaluate_model(model, dataset, "test")
    assert metrics["top1_accuracy"] == np.mean(served.argmax(axis=1) == labels.numpy())
    assert metrics["crops"] == (10 if ten_crop else 1)


def test_predict_images_equals_the_runs_own_keras_file(float32_run):
    """The export rebuilds the network from config.json and loads the weights into it; the run's
    best.keras deserialized as it was trained (keras.saving.load_model) must agree on the same
    crops: probabilities to 1e-5 (float32 on both sides), softmax computed in NumPy."""
    model_dir, exports, _ = float32_run
    stats = load_stats(model_dir)
    assert stats.mean_image is None  # The ImageNet per-channel mean.
    # Training-like crops (a bright quadrant per class) as 0..255 pixels: 4 different answers.
    crops = np.clip(np.round(tiny_arrays(n=4, seed=5)[0] + 120), 0, 255).astype(np.uint8)
    model = keras.saving.load_model(os.path.join(model_dir, "best.keras"))
    logits = model.predict(crops.astype(np.float32) - np.float32(stats.mean_rgb), verbose=0)
    expected = _softmax(logits)
    by_float = exports[False].signatures["predict_images"](images=tf.constant(crops, tf.float32))
    by_uint8 = exports[False].signatures["predict_images_uint8"](images=tf.constant(crops))
    for served in (by_float, by_uint8):
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=0, atol=1e-5)
    assert np.abs(expected - expected.mean(axis=0)).max() > 0.05  # Not one saturated answer.


def _numpy_bilinear(image, height, width):
    """TF's bilinear resize (half-pixel centres, no antialiasing), written out in NumPy."""

    def taps(size_out, size_in):
        x = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        low = np.floor(x).astype(int)
        return low, np.minimum(low + 1, size_in - 1), (x - low).astype(np.float64)

    (top, bottom, fy), (left, right, fx) = taps(height, image.shape[0]), taps(width, image.shape[1])
    rows = image[top] * (1 - fy)[:, None, None] + image[bottom] * fy[:, None, None]
    return rows[:, left] * (1 - fx)[None, :, None] + rows[:, right] * fx[None, :, None]


def _numpy_eval_crop(png, stats, image_size, resize_size):
    """Sec. 2 and 4.1 with PIL and NumPy only: decode, shorter side to resize_size (rounded as
    TF rounds, in float32), the central square, minus the mean, the central image_size crop."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64)
    height, width = image.shape[:2]
    scale = np.float32(resize_size) / np.float32(min(height, width))
    new_h = max(resize_size, int(np.round(np.float32(height) * scale)))
    new_w = max(resize_size, int(np.round(np.float32(width) * scale)))
    resized = _numpy_bilinear(image, new_h, new_w)
    top, left = (new_h - resize_size) // 2, (new_w - resize_size) // 2
    square = resized[top : top + resize_size, left : left + resize_size] - np.array(stats.mean_rgb)
    offset = (resize_size - image_size) // 2
    return square[offset : offset + image_size, offset : offset + image_size]


@pytest.mark.parametrize("height, width", [(97, 131), (150, 80)])
def test_serving_default_equals_pil_and_numpy_preprocessing(float32_run, height, width):
    """An image served as bytes against an independent reference: PIL decodes the PNG (lossless,
    so both decoders agree), NumPy resizes, crops and subtracts the mean, and the run's own
    best.keras answers; the served probabilities must agree to 1e-5. Neither side uses the
    project's preprocessing."""
    model_dir, exports, _ = float32_run
    stats = load_stats(model_dir)
    config = run_files.load_config(model_dir)
    resize_size = config.resize_size or round(config.image_size * 256 / 227)
    pictures = [smooth_image(height, width, seed=s) for s in (7, 8)]
    pngs = [encode(picture, "PNG") for picture in pictures]
    crops = np.stack([_numpy_eval_crop(png, stats, config.image_size, resize_size) for png in pngs])
    model = keras.saving.load_model(os.path.join(model_dir, "best.keras"))
    expected = _softmax(model.predict(crops.astype(np.float32), verbose=0))
    served = exports[False].signatures["serving_default"](image_bytes=tf.constant(pngs))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=0, atol=1e-5)
    assert np.abs(expected[0] - expected[1]).max() > 1e-3  # Two images, two answers.


def test_export_variables_are_the_runs_keras_file_bit_for_bit(trained, loaded):
    """The bfloat16 towers run: serving computes in float32 by design, so its outputs cannot
    match the deserialized training model to 1e-5; its weights must match it exactly."""
    model = keras.saving.load_model(os.path.join(trained[0], "best.keras"))
    assert model.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"  # As trained.
    trained_weights = {w.path: w.numpy() for w in model.weights}
    exported = {v.name.rsplit(":", 1)[0]: v.numpy() for v in loaded.variables}
    assert set(trained_weights) <= set(exported)
    extra = set(exported) - set(trained_weights)
    assert all(name.endswith("/seed_generator_state") for name in extra), extra  # Dropout's.
    for name, value in trained_weights.items():
        assert exported[name].dtype == value.dtype == np.float32, name
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    path, images = sys.argv[1], [open(p, "rb").read() for p in sys.argv[2:]]
    out = tf.saved_model.load(path).signatures["serving_default"](image_bytes=tf.constant(images))
    tf2 = out["probabilities"].numpy().tolist()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:  # TF Serving's loader.
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        fetch = {k: v.name for k, v in sig.outputs.items()}
        values = sess.run(fetch, {sig.inputs["image_bytes"].name: images})
    assert not any(m.startswith("alexnet_keras") for m in sys.modules), "imported the package"
    print(json.dumps({"tf2": tf2, "tf1": values["probabilities"].tolist(),
                      "labels": values["top_k_labels"].astype(str).tolist()}))
""")


def _served_in_fresh_process(export_path, images, tmp_path):
    """`_FRESH_PROCESS`'s results for `images` (written to files) served from `export_path`,
    with oneDNN off: TF's own CPU kernels, which have no grouped convolution (TF Serving may run
    on a CPU where oneDNN is off by default, whatever the exporting machine had)."""
    paths = []
    for i, data in enumerate(images):
        paths.append(str(tmp_path / f"{i}.img"))
        open(paths[-1], "wb").write(data)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, export_path, *paths],
        capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fresh_process_and_tf1_session_loader(trained, reference_model, tmp_path):
    images = sample_images()
    result = _served_in_fresh_process(trained[1].path, images, tmp_path)
    expected = reference_probabilities(
        reference_model, export.resolve_source(trained[0]).stats, images
    )
    np.testing.assert_allclose(result["tf2"], expected, atol=1e-5)
    np.testing.assert_allclose(result["tf1"], expected, atol=1e-5)
    ranking = np.argsort(-expected, axis=1, kind="stable")  # 4 classes: top_k is all 4.
    np.testing.assert_array_equal(result["labels"], np.array(CLASSES)[ranking])


def test_warmup_records_parse_and_replay(trained, loaded, reference_model):
    """Every warmup request replays and answers what the in-memory model answers for its inputs
    (encoded images through the shared eval preprocessing; pixels minus the mean)."""
    logs = warmup.read_warmup_file(
        os.path.join(trained[1].path, "assets.extra", "tf_serving_warmup_requests")
    )
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(names) == sorted([serving.SERVING_DEFAULT] * 2 + list(serving.SIGNATURES[1:]))
    stats_used = export.resolve_source(trained[0]).stats
    assert stats_used.mean_image is None
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "alexnet"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert sorted(outputs) == OUTPUTS
        if request.model_spec.signature_name == serving.SERVING_DEFAULT:
            images = list(inputs[serving.BYTES_INPUT])
            expected = reference_probabilities(reference_model, stats_used, images)
        else:
            pixels = inputs[serving.IMAGES_INPUT].astype(np.float32)
            expected = _softmax(reference_model(pixels - np.float32(stats_used.mean_rgb)))
        np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=0, atol=1e-5)


def test_bad_inputs_name_the_input(loaded):
    jpeg = sample_images()[0]
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is not a JPEG"):
        serve(image_bytes=tf.constant([jpeg, b"this is not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes: the batch is empty"):
        serve(image_bytes=tf.constant([], tf.string))
    images = loaded.signatures["predict_images"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="images: the batch is empty"):
        images(images=tf.zeros([0, SIZE, SIZE, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images: expected shape \[batch, 67"):
        images(images=tf.zeros([SIZE, SIZE, 3]))  # Rank 3: one image without its batch axis.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images: expected shape"):
        images(images=tf.zeros([1, 32, 32, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"received\] \[2 67 67 1\]"):
        images(images=tf.zeros([2, SIZE, SIZE, 1]))  # The whole shape, channels included.
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        images(images=tf.zeros([1, SIZE, SIZE, 3], tf.uint8))  # predict_images_uint8 takes these.


def test_image_checks_gate_the_preprocessing(reference_model):
    """For float32 input the cast is no op; the named checks must still run before the
    preprocessing reads the images (they raced it, and its unnamed shape error sometimes won)."""
    functions = serving.ServingFunctions(reference_model, CLASSES, STATS, SIZE)
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    graph = tf.function(functions.serve_images).get_concrete_function(spec).graph
    operations = graph.get_operations()
    images = next(op for op in operations if op.type == "Placeholder" and op.outputs[0].shape.rank)
    # Everything that reads the pixels, not only their shape (what the checks themselves read).
    readers = [o for o in operations if images in {t.op for t in o.inputs} and o.type != "Shape"]
    assert readers
    for op in readers:
        seen, stack = set(), [op]
        while stack:
            current = stack.pop()
            for parent in [t.op for t in current.inputs] + list(current.control_inputs):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        assert "Assert" in {parent.type for parent in seen}, op.name


def test_tf1_session_feed_of_wrong_shape_names_the_input(trained):
    """The Python session checks feeds against the signature (TF Serving's C++ session does not;
    there the in-graph check of test_bad_inputs_name_the_input answers)."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], trained[1].path)
        sig = meta.signature_def["predict_images"]
        with pytest.raises(ValueError, match="predict_images_images"):
            sess.run(
                sig.outputs["probabilities"].name,
                {sig.inputs["images"].name: np.zeros([1, 32, 32, 3])},
            )


def test_missing_or_corrupt_checkpoint_leaves_nothing(tmp_path):
    run_dir = write_run_dir(str(tmp_path / "run"))
    os.remove(os.path.join(run_dir, "last.keras"))
    with pytest.raises(FileNotFoundError, match="last.keras does not exist.*--checkpoint=best"):
        export.resolve_source(run_dir, checkpoint="last")  # best.keras is there to export.
    os.rename(os.path.join(run_dir, "best.keras"), os.path.join(tmp_path, "best.keras"))
    with pytest.raises(FileNotFoundError, match="Train for at least one epoch"):
        export.resolve_source(run_dir)  # Neither: no "pick the other checkpoint".
    os.rename(os.path.join(tmp_path, "best.keras"), os.path.join(run_dir, "best.keras"))
    with open(os.path.join(run_dir, "best.keras"), "wb") as f:
        f.write(b"PK\x03\x04 truncated zip")
    base = tmp_path / "exports"
    with pytest.raises(ValueError, match="best.keras"):
        export.export_saved_model(export.resolve_source(run_dir), str(base))
    assert not base.exists()
    with pytest.raises(FileNotFoundError, match="config.json"):
        export.resolve_source(str(tmp_path / "no_such_run"))


@pytest.mark.slow
def test_crash_mid_export_leaves_nothing_and_versions_count_up(tmp_path, monkeypatch):
    run_dir = write_run_dir(str(tmp_path / "run"))
    base = tmp_path / "exports"
    source = export.resolve_source(run_dir)
    seen = {}

    def crash(directory, *args):
        seen["tmp"] = directory
        seen["listing"] = os.listdir(base / "alexnet")
        raise KeyboardInterrupt  # A crash (or Ctrl-C) while writing.

    monkeypatch.setattr(warmup, "write_warmup_file", crash)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(source, str(base))
    assert seen["listing"] == [os.path.basename(seen["tmp"])]  # Only the hidden temporary.
    assert not os.path.basename(seen["tmp"]).isdigit()  # TF Serving ignores non-numeric dirs.
    assert not base.exists()  # Everything this export created is gone.
    monkeypatch.undo()

    first = export.export_saved_model(source, str(base), write_warmup=False)
    second = export.export_saved_model(source, str(base), write_warmup=False)
    assert (first.version, second.version) == (1, 2)
    assert sorted(os.listdir(base / "alexnet")) == ["1", "2"]
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_saved_model(source, str(base), version=2, write_warmup=False)


def test_a_runs_keras_files_carry_its_run_files(trained, tmp_path):
    """best.keras and last.keras hold the run's config.json, class_names.json and stats.json
    byte for byte, so either file copied out of its run resolves to the run's own source."""
    model_dir = trained[0]
    for checkpoint in ("best", "last"):
        path = run_files.model_file(model_dir, checkpoint)
        inside = keras_file.run_files_inside(path)
        for name in keras_file.RUN_FILES:
            with open(os.path.join(model_dir, name)) as f:
                assert inside[name] == f.read(), (checkpoint, name)
    alone = str(tmp_path / "copied.keras")
    shutil.copyfile(run_files.model_file(model_dir), alone)
    ours, theirs = export.resolve_source(model_dir), export.resolve_source(keras_file=alone)
    assert theirs.config == ours.config
    assert (theirs.class_names, theirs.stats) == (ours.class_names, ours.stats)


def test_keras_file_and_ten_crop_export(tmp_path):
    """A bare .keras file (class names and stats passed in) with 10-crop averaging."""
    run_dir = write_run_dir(str(tmp_path / "run"))
    keras_file = str(tmp_path / "model.keras")
    os.rename(os.path.join(run_dir, "best.keras"), keras_file)
    stats_file = os.path.join(run_dir, "stats.json")
    source = export.resolve_source(
        keras_file=keras_file, class_names=list(CLASSES), stats_file=stats_file
    )
    assert source.config.image_size == SIZE and source.stats == STATS
    result = export.export_saved_model(
        source, str(tmp_path / "exports"), "tiny", ten_crop=True, top_k=2, write_warmup=False
    )
    outputs = tf.saved_model.load(result.path).signatures["serving_default"](
        image_bytes=tf.constant(sample_images()[:2])
    )
    model = load_inference_model(keras_file, source.config, len(CLASSES))
    expected = reference_probabilities(model, STATS, sample_images()[:2], ten_crop=True)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    assert outputs["top_k_ids"].shape == (2, 2)


@pytest.mark.slow  # Two subprocesses that import TensorFlow: ~15-25 s.
def test_bare_cli_exports_the_default_run(tmp_path):
    """`python tools/export.py` with no flags: runs/alexnet -> exports/alexnet/1 (cwd-relative)."""
    tool = os.path.join(REPO, "tools", "export.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    missing = subprocess.run([sys.executable, tool], capture_output=True, text=True,
                             timeout=180, cwd=str(tmp_path), env=env)  # fmt: skip
    assert missing.returncode == 2 and "runs/alexnet/config.json" in missing.stderr
    assert missing.stderr.count("\n") == 1, missing.stderr  # One line, no traceback.
    assert not (tmp_path / "exports").exists()
    write_run_dir(str(tmp_path / "runs" / "alexnet"))
    done = subprocess.run([sys.executable, tool, "--nowarmup"], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "exports" / "alexnet" / "1" / "saved_model.pb").exists()
    assert f"to {tmp_path / 'exports' / 'alexnet' / '1'}" in done.stdout
    assert "docker run" in done.stdout and "tensorflow_model_server --port=8500" in done.stdout


@pytest.fixture(scope="module")
def bfloat16_export(float32_run, shared):
    """The unsaturated float32 run exported with bfloat16 weights (with its warmup file)."""

    def build(directory):
        source = export.resolve_source(float32_run[0])
        exported = export.export_saved_model(source, directory, serving_precision="bfloat16")
        return dataclasses.asdict(exported)

    return export.ExportResult(**shared("export_bfloat16", build))


@pytest.mark.slow
def test_bfloat16_export_stores_bfloat16_weights_and_serves_close_to_float32(
    float32_run, bfloat16_export, tmp_path
):
    """--serving_precision=bfloat16: weights stored in bf16 (fc8, the logits, stays float32);
    on a run whose answers differ by image, probabilities within 0.01 of the same run's float32
    export and the same top-1, in TF2 and in TF1 sessions; every warmup request replays to what
    the float32 export answers for its inputs, within the same 0.01."""
    served = tf.saved_model.load(bfloat16_export.path)
    float32 = float32_run[1][False]
    weights = {v.name: v.dtype for v in served.variables if "kernel" in v.name or "bias" in v.name}
    assert len(weights) == 32  # 8 layers x 2 columns x (kernel, bias).
    for name, dtype in weights.items():
        assert dtype == (tf.float32 if name.startswith("fc8/") else tf.bfloat16), name
    info = json.load(open(os.path.join(bfloat16_export.path, "assets.extra", "export_info.json")))
    assert info["serving_precision"] == "bfloat16"
    images, _ = training_like_jpegs(n=4)
    ours = served.signatures["serving_default"](image_bytes=tf.constant(images))["probabilities"]
    theirs = float32.signatures["serving_default"](image_bytes=tf.constant(images))
    ours, theirs = ours.numpy(), theirs["probabilities"].numpy()
    assert ours.dtype == np.float32
    assert np.abs(theirs - theirs.mean(axis=0)).max() > 0.03  # Answers that depend on the image.
    np.testing.assert_allclose(ours, theirs, atol=0.01)
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))
    result = _served_in_fresh_process(bfloat16_export.path, images, tmp_path)
    np.testing.assert_allclose(result["tf1"], theirs, atol=0.01)  # TF Serving's session loader.
    logs = warmup.read_warmup_file(
        os.path.join(bfloat16_export.path, "assets.extra", "tf_serving_warmup_requests")
    )
    assert len(logs) == 4
    for log in logs:  # Every warmup request replays, to the float32 export's answer.
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        signature = request.model_spec.signature_name
        outputs = served.signatures[signature](**inputs)["probabilities"].numpy()
        expected = float32.signatures[signature](**inputs)["probabilities"].numpy()
        np.testing.assert_allclose(outputs, expected, atol=0.01)
