"""The benchmark tool runs end to end and reports every documented figure (values unchecked)."""

import json
import math
import statistics
import subprocess
import sys

import pytest
from train_helpers import REPO, run_env

KEYS = {
    "train_images_per_sec", "train_e2e_images_per_sec", "train_e2e_uint8_images_per_sec",
    "input_images_per_sec", "input_uint8_images_per_sec", "infer_images_per_sec",
    "latency_ms_batch1", "savedmodel_float32_latency_ms_batch1", "gemm_gflops_float32",
    "savedmodel_bfloat16_latency_ms_batch1", "savedmodel_float32_images_per_sec",
    "savedmodel_bfloat16_images_per_sec",
    "gemm_gflops_bfloat16",
    "train_fraction_of_ceiling", "train_ceiling_gflops", "train_fraction_max",
}  # fmt: skip


@pytest.mark.slow
def test_benchmark_writes_all_figures(tmp_path):
    output = tmp_path / "bench.json"
    command = [sys.executable, "tools/benchmark.py", "--image_size=67", "--batch_size=4",
               "--infer_batch_size=2", "--steps=1", "--windows=2", "--jpegs=8",
               "--kernels=lrn,bias_add", "--gemm_size=256", "--fc_units=256", f"--json={output}",
               f"--profile_dir={tmp_path / 'profile'}"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=run_env(tmp_path), capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert KEYS <= set(figures)
    assert all(math.isfinite(figures[k]) and figures[k] > 0 for k in KEYS)
    assert "train_fraction_of_ceiling" in result.stdout
    # The FLOPs are the direct convolution's; the kernels the step ran (here forced by the flag,
    # on any CPU) are named beside them.
    assert figures["kernels"] == "lrn, bias_add"
    # Each window is held to the ceiling of its precision measured around it; the reported
    # fraction is the median of the windows' fractions.
    windows = figures["train_windows"]
    assert len(windows) == 2
    fractions = [
        w["images_per_sec"] * figures["train_gflop_per_image"] / w["ceiling_gflops"]
        for w in windows
    ]
    assert figures["train_fraction_of_ceiling"] == pytest.approx(statistics.median(fractions))
    assert figures["train_fraction_min"] == pytest.approx(min(fractions))
    assert figures["train_images_per_sec"] == pytest.approx(
        statistics.median(w["images_per_sec"] for w in windows)
    )
    # The profiler summary names the layers and op types the traced steps spent their time in.
    assert "Op time per step by layer" in result.stdout and "conv2 " in result.stdout
    assert "Conv2DBackpropFilter" in result.stdout
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))
