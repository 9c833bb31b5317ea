"""Export for TF Serving: layout, signatures, equality with the in-memory model, warmup, errors."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_helpers import STATS, reference_probabilities, sample_images, write_run_dir
from train_helpers import CLASSES, REPO, SIZE, tiny_config, tiny_datasets

from alexnet_keras.run_dir import load_inference_model
from alexnet_keras.serving import export, warmup
from alexnet_keras.serving import signatures as serving
from alexnet_keras.training.trainer import run

OUTPUTS = sorted(serving.OUTPUTS)
OUTPUT_DTYPES = {
    "probabilities": "DT_FLOAT",
    "top_k_ids": "DT_INT32",
    "top_k_scores": "DT_FLOAT",
    "top_k_labels": "DT_STRING",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real tiny training run (mixed bfloat16, columns pinned to two devices) and its export."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(
        model_dir, distribution="towers", devices=("/cpu:0", "/cpu:1"), mixed_precision="bfloat16"
    )
    try:
        run(config, tf.distribute.get_strategy(), tiny_datasets(steps=2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    base = str(tmp_path_factory.mktemp("exports"))
    result = export.export_saved_model(export.resolve_source(model_dir), base)
    return model_dir, result


@pytest.fixture(scope="module")
def loaded(trained):
    return tf.saved_model.load(trained[1].path)


@pytest.fixture(scope="module")
def reference_model(trained):
    source = export.resolve_source(trained[0])
    return load_inference_model(source.checkpoint, source.config, len(CLASSES))


def test_layout_configs_and_commands(trained):
    model_dir, result = trained
    assert result.version == 1 and result.path == os.path.join(result.export_base, "alexnet", "1")
    assert sorted(os.listdir(os.path.dirname(result.path))) == ["1"]  # No temporary left.
    for name in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(result.path, name)), name
    with open(os.path.join(result.path, "assets.extra", "labels.txt")) as f:
        assert f.read().split() == list(CLASSES)
    models_config = open(result.models_config).read()
    assert 'name: "alexnet"' in models_config
    assert f'base_path: "{os.path.abspath(os.path.dirname(result.path))}"' in models_config
    assert "max_batch_size" in open(result.batching_parameters).read()
    assert result.commands["docker"].startswith("docker run")
    assert "tensorflow/serving --model_config_file=" in result.commands["docker"]
    assert "--rest_api_port=8501" in result.commands["tensorflow_model_server"]


def test_serving_graph_is_float32_without_device_pins(trained):
    """The run trained in mixed bfloat16 on pinned towers; none of that may reach serving."""
    graph = open(os.path.join(trained[1].path, "saved_model.pb"), "rb").read()
    assert b"CPU:1" not in graph and b"cpu:1" not in graph
    assert b"mixed_bfloat16" not in graph


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


def test_fresh_process_and_tf1_session_loader(trained, reference_model, tmp_path):
    images = sample_images()
    paths = []
    for i, data in enumerate(images):
        paths.append(str(tmp_path / f"{i}.img"))
        open(paths[-1], "wb").write(data)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, trained[1].path, *paths],
        capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = reference_probabilities(
        reference_model, export.resolve_source(trained[0]).stats, images
    )
    np.testing.assert_allclose(result["tf2"], expected, atol=1e-5)
    np.testing.assert_allclose(result["tf1"], expected, atol=1e-5)
    assert set(np.ravel(result["labels"])) <= set(CLASSES)


def test_warmup_records_parse_and_replay(trained, loaded):
    logs = warmup.read_warmup_file(
        os.path.join(trained[1].path, "assets.extra", "tf_serving_warmup_requests")
    )
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert set(names) == set(serving.SIGNATURES)
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "alexnet"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        batch = len(next(iter(inputs.values())))
        assert sorted(outputs) == OUTPUTS
        assert outputs["probabilities"].shape == (batch, len(CLASSES))
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


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
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        images(images=tf.zeros([1, SIZE, SIZE, 3], tf.uint8))  # predict_images_uint8 takes these.


def test_image_checks_gate_the_preprocessing(reference_model):
    """For float32 input the cast is no op; the named checks must still run before the map (they
    raced it, and the map's unnamed shape error sometimes won)."""
    functions = serving.ServingFunctions(reference_model, CLASSES, STATS, SIZE)
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    graph = tf.function(functions.serve_images).get_concrete_function(spec).graph

    unstacks = [op for op in graph.get_operations() if op.type == "TensorListFromTensor"]
    assert unstacks
    for op in unstacks:
        seen, stack = set(), [op]
        while stack:
            current = stack.pop()
            for parent in [t.op for t in current.inputs] + list(current.control_inputs):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        assert "Assert" in {parent.type for parent in seen}


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
    with pytest.raises(FileNotFoundError, match="last.keras"):
        export.resolve_source(run_dir, checkpoint="last")
    with open(os.path.join(run_dir, "best.keras"), "wb") as f:
        f.write(b"PK\x03\x04 truncated zip")
    base = tmp_path / "exports"
    with pytest.raises(ValueError, match="best.keras"):
        export.export_saved_model(export.resolve_source(run_dir), str(base))
    assert not base.exists()
    with pytest.raises(FileNotFoundError, match="config.json"):
        export.resolve_source(str(tmp_path / "no_such_run"))


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
