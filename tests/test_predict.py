"""`python -m alexnet_keras.predict`: top-5 of image files from an export, in-process."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import write_images
from train_helpers import CLASSES, REPO

from alexnet_keras.serving import predict


@pytest.fixture(scope="module")
def exported(random_export):
    return random_export


def test_predict_files_match_the_signature(exported, tmp_path):
    paths = write_images(str(tmp_path))
    predictions = predict.predict_files(os.path.dirname(exported.path), paths, batch_size=2)
    images = [open(p, "rb").read() for p in paths]
    out = tf.saved_model.load(exported.path).signatures["serving_default"](
        image_bytes=tf.constant(images)
    )
    assert len(predictions) == 3
    for i, prediction in enumerate(predictions):
        assert prediction.ids == tuple(out["top_k_ids"].numpy()[i])
        expected = [v.decode() for v in out["top_k_labels"].numpy()[i]]
        assert list(prediction.labels) == expected  # In the signature's ranking order.
        assert expected == [CLASSES[j] for j in prediction.ids]
        np.testing.assert_allclose(prediction.scores, out["top_k_scores"].numpy()[i], atol=1e-6)


def test_resolve_and_errors(exported, tmp_path):
    model_base = os.path.dirname(exported.path)
    assert predict.resolve_saved_model(model_base) == exported.path
    assert predict.resolve_saved_model(exported.path) == exported.path
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        predict.resolve_saved_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predict.predict_files(model_base, [str(tmp_path / "missing.jpg")])
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.jpg: image_bytes\[0\] is not a JPEG"):
        predict.predict_files(model_base, [str(bad)])


@pytest.mark.slow
def test_cli_prints_top5(exported, tmp_path):
    paths = write_images(str(tmp_path))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ["PYTHONPATH"])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-m", "alexnet_keras.predict", *paths[:2],
         f"--saved_model={os.path.dirname(exported.path)}"],
        capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == paths[0] and lines[5] == paths[1]
    assert lines[1].startswith("  1. ") and "(class " in lines[1]
    assert len(lines) == 2 * (1 + len(CLASSES))  # top_k = min(5, classes) = 4 lines each.


def _damaged_jpeg(tmp_path, good_jpeg):
    """JPEG magic, then garbage: passes the signature's format check, fails in the decoder."""
    data = open(good_jpeg, "rb").read()
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(data[:20] + b"\x00" * 200)
    return str(damaged)


def test_a_damaged_jpeg_is_named_and_costs_no_other_file(exported, tmp_path):
    paths = write_images(str(tmp_path))
    damaged = _damaged_jpeg(tmp_path, paths[0])
    model_base = os.path.dirname(exported.path)
    alone = predict.predict_files(model_base, [paths[0], paths[1]])
    with pytest.raises(predict.RejectedImages) as caught:
        # One batch: the decoder's error names no image; the retry one at a time does.
        predict.predict_files(model_base, [paths[0], damaged, paths[1]], batch_size=3)
    assert str(caught.value).startswith(f"{damaged}: not a readable image (jpeg::Uncompress")
    got = caught.value.predictions
    assert got[1] is None
    for prediction, expected in zip([got[0], got[2]], alone):  # Batches of 1 round differently.
        assert (prediction.labels, prediction.ids) == (expected.labels, expected.ids)
        np.testing.assert_allclose(prediction.scores, expected.scores, atol=1e-6)


@pytest.mark.slow
def test_cli_prints_the_good_files_and_names_the_bad(exported, tmp_path):
    paths = write_images(str(tmp_path))
    damaged = _damaged_jpeg(tmp_path, paths[0])
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ["PYTHONPATH"])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-m", "alexnet_keras.predict", paths[0], damaged, paths[1],
         f"--saved_model={os.path.dirname(exported.path)}"],
        capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert [lines[0], lines[5]] == [paths[0], paths[1]] and len(lines) == 2 * (1 + len(CLASSES))
    assert f"Error: {damaged}: not a readable image" in done.stderr
    assert "Traceback" not in done.stderr
