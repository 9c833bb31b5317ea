"""The model and its layers on every Keras backend: TensorFlow, JAX and PyTorch (CPU).

One network saved under TensorFlow gives the same logits under each backend (relative 1e-5),
takes a `fit` step on each, and the file each backend saves after its step loads under every
other with the same predictions. Each backend runs in its own process (Keras picks its backend
at import), which must not import TensorFlow: training, strategies and export stay TensorFlow's,
the model and its layers are Keras's.
"""

import json
import os
import subprocess
import sys

import backend_run
import keras
import numpy as np
import pytest
from train_helpers import REPO

from alexnet_keras.model import build_alexnet

OTHERS = ("jax", "torch")
RELATIVE = 1e-5


def _run(directory, backend, *args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = REPO + os.pathsep + env["PYTHONPATH"]  # After conftest's no_network.
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "backend_run.py"), str(directory), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_same_logits_fit_and_files_on_every_backend(tmp_path):
    for backend in OTHERS:
        pytest.importorskip(backend)
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (4, 67, 67, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(4, dtype=np.int32))
    model = build_alexnet(  # Small fc layers: no backend property depends on their size.
        10, (67, 67, 3), kernel_initializer="he_normal", bias_initializer="zeros",
        input_scale=1 / 64, seed=3, fc_units=64,
    )  # fmt: skip
    model.save(tmp_path / "base.keras")
    logits = model.predict(images, verbose=0)
    assert np.ptp(logits) > 0.1  # Logits that differ, so equal ones mean something.
    # This process is TensorFlow's: its step first, then the others', then the files they left.
    results = {"tensorflow": backend_run.main(str(tmp_path))}
    for backend in OTHERS:
        results[backend] = _run(tmp_path, backend)
    results["tensorflow"]["loaded"] |= backend_run.main(str(tmp_path), check_only=True)["loaded"]
    results["jax"]["loaded"] |= _run(tmp_path, "jax", "--check-only")["loaded"]
    for backend, result in results.items():
        assert result["backend"] == backend
        assert result["tensorflow_imported"] == (backend == "tensorflow"), backend  # Not needed.
        ours = np.load(tmp_path / f"logits_{backend}.npy")
        np.testing.assert_allclose(ours, logits, rtol=0, atol=RELATIVE * np.abs(logits).max())
        assert np.isfinite(result["loss"]), backend
        # A file saved after a step under each other backend: the same predictions here.
        assert set(result["loaded"]) == set(results) - {backend}, backend
        assert max(result["loaded"].values()) < RELATIVE, (backend, result["loaded"])
    assert keras.backend.backend() == "tensorflow"
