"""Pictures (issue 7): conv1 filter grid, TensorBoard filters, fc7 neighbours, predictions, curves.

One tiny real training run (67x67, 4 classes, 2 epochs of 2 steps) is shared by the module.
"""

import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_helpers import write_images
from PIL import Image
from train_helpers import (
    FC_UNITS,
    REPO,
    SIZE,
    command_reporting_tensorflow,
    run_env,
    tiny_arrays,
    tiny_config,
    tiny_datasets,
    write_idx,
)

from alexnet_keras import filter_grid
from alexnet_keras.model import build_alexnet
from alexnet_keras.pictures import figures
from alexnet_keras.pictures import filters as pictures
from alexnet_keras.pictures import neighbours as nn
from alexnet_keras.run_dir import load_run
from alexnet_keras.run_files import read_history
from alexnet_keras.serving import export, predict
from alexnet_keras.training import callbacks as cb
from alexnet_keras.training.trainer import run


@pytest.fixture(scope="module")
def run_dir(shared):
    """Seeded, so every run of this module trains the same weights (an unseeded one once left
    fc7 dead for some images). Not `deterministic=True`: that turns on op determinism for the
    rest of the pytest process, which no other test expects."""

    def build(directory):
        config = tiny_config(directory, epochs=2, steps_per_epoch=2, ten_crop_eval=False, seed=7)
        run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=2))
        return directory

    return shared("visualize_run", build)


@pytest.fixture(scope="module")
def exported(run_dir, shared):
    def build(directory):
        source = export.resolve_source(run_dir)
        return dataclasses.asdict(export.export_saved_model(source, directory, write_warmup=False))

    return export.ExportResult(**shared("visualize_export", build))


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """Fashion-MNIST IDX files whose test split is the first 3 training images (so queries are
    in the index)."""
    directory = str(tmp_path_factory.mktemp("fashion"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28))
    labels = np.arange(20) % 10
    write_idx(directory, "train", images, labels)
    write_idx(directory, "test", images[:3], labels[:3])
    return directory


def png_shape(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # Fails on a truncated file.
        return image.size


def random_columns(seed=0, n=48):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(11, 11, 3, n)).astype(np.float32) for _ in range(2)]


def test_filter_grid_has_two_columns_of_48_cells():
    columns = random_columns()
    grid = filter_grid.filter_grid(columns, scale=3)
    assert grid.cells.shape == (2, 48, 11, 11, 3)
    assert [len(boxes) for boxes in grid.boxes] == [48, 48]
    assert grid.cell_size == 33
    assert len({box for boxes in grid.boxes for box in boxes}) == 96
    assert max(t for t, _ in grid.boxes[0]) < min(t for t, _ in grid.boxes[1])  # Column 0 on top.
    for c in range(2):
        for i, (top, left) in enumerate(grid.boxes[c]):
            kernel = columns[c][..., i]  # Independent normalisation: min-max of this kernel.
            expected = (kernel - kernel.min()) / (kernel.max() - kernel.min())
            big = np.kron(expected, np.ones((3, 3, 1)))
            cell = grid.image[top : top + 33, left : left + 33]
            np.testing.assert_allclose(cell, np.round(big * 255), atol=1)
    painted = sum(grid.cell_size**2 for boxes in grid.boxes for _ in boxes)
    assert np.sum(np.any(grid.image != 255, axis=-1)) <= painted  # The rest is background.


def test_filter_grid_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[kh, kw, 3, n\]"):
        filter_grid.filter_grid([np.zeros((11, 11, 1, 48))])


def test_colour_saturation_of_known_kernels():
    rng = np.random.default_rng(1)
    luminance = rng.normal(size=(10, 11, 11, 1))
    grey = np.repeat(luminance, 3, axis=-1)
    opponent = np.concatenate([luminance, -luminance, np.zeros_like(luminance)], axis=-1)
    random = rng.normal(size=(2000, 11, 11, 3))
    np.testing.assert_allclose(filter_grid.kernel_saturation(grey), 0, atol=1e-12)
    np.testing.assert_allclose(filter_grid.kernel_saturation(opponent), 1, atol=1e-12)
    assert filter_grid.kernel_saturation(random).mean() == pytest.approx(np.sqrt(2 / 3), abs=0.01)
    assert filter_grid.kernel_saturation(np.zeros((1, 11, 11, 3)))[0] == 0
    # Per column: a grey column and a colour column (HWIO layout, as conv1 stores them).
    grid = filter_grid.filter_grid([grey.transpose(1, 2, 3, 0), opponent.transpose(1, 2, 3, 0)])
    assert grid.saturation == pytest.approx((0.0, 1.0))
    assert "column 1 (GPU 2): mean colour saturation 1.000" in pictures.format_saturation(
        grid.saturation
    )


def test_filters_png_of_a_trained_model(run_dir, tmp_path):
    model = load_run(run_dir).model
    kernels = filter_grid.conv1_kernels(model)
    assert [k.shape for k in kernels] == [(11, 11, 3, 48)] * 2
    np.testing.assert_array_equal(kernels[1], model.get_layer("conv1").kernels[1].numpy())
    grid = filter_grid.model_filter_grid(model)
    path = str(tmp_path / "out" / "filters.png")
    pictures.write_png(grid.image, path)
    assert png_shape(path) == (grid.image.shape[1], grid.image.shape[0])
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid.image)  # Lossless.
    assert all(0 <= s <= 1 for s in grid.saturation)


def test_callback_writes_filter_image_to_tensorboard(tmp_path):
    model = build_alexnet(4, (SIZE, SIZE, 3), kernel_initializer="he_normal", input_scale=1 / 64)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    images, labels = tiny_arrays(n=8)
    log_dir = str(tmp_path / "logs" / "filters")
    callback = cb.FilterImageCallback(log_dir)
    model.fit(images, labels, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    events = tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert events
    found = {}
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value))
    steps = [step for step, _ in found[cb.FILTERS_TAG]]
    assert steps == [0, 1]
    image = found[cb.FILTERS_TAG][-1][1]
    assert image.metadata.plugin_data.plugin_name == "images"
    width, height, png = tf.make_ndarray(image.tensor)  # The image plugin's [w, h, png] layout.
    grid = filter_grid.model_filter_grid(model)
    assert (int(width), int(height)) == (grid.image.shape[1], grid.image.shape[0])
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), grid.image)
    assert "conv1_saturation/column_1" in found


def test_nearest_neighbours_finds_index_members_at_distance_zero():
    rng = np.random.default_rng(2)
    index = rng.normal(size=(300, 64)).astype(np.float32) * 50
    queries = index[[7, 123, 299]]
    indices, distances = nn.nearest_neighbours(queries, index, k=4)
    assert indices[:, 0].tolist() == [7, 123, 299]
    assert np.all(distances[:, 0] == 0)
    expected = np.sort(np.linalg.norm(index[None] - queries[:, None], axis=-1), axis=1)[:, :4]
    np.testing.assert_allclose(distances, expected, rtol=1e-5)
    assert nn.nearest_neighbours(queries, index[:2], k=5)[0].shape == (3, 2)


def test_neighbours_through_the_pipeline(run_dir, fashion_dir, tmp_path, monkeypatch):
    """Test image q is training image q, so it is found at distance exactly 0, by construction:
    with batch_size=3 the 3 queries and the first 3 index images go through the network as the
    same batch (other batch sizes need not give bit-identical features: the CPU kernels may block
    the work differently), and the stable sort ranks index q before any later index it ties with,
    so at most q < k images precede it."""
    monkeypatch.setenv("ALEXNET_FASHION_MNIST_DIR", fashion_dir)
    loaded = load_run(run_dir)
    result = nn.search(loaded.model, "fashion_mnist", loaded.stats, SIZE, num_queries=3, k=4,
                       index_size=12, batch_size=3)  # fmt: skip
    index = result.index.features
    assert index.shape == (12, FC_UNITS)
    assert result.index.images.shape == (12, SIZE, SIZE, 3)
    np.testing.assert_array_equal(result.queries.features, index[:3])
    # The features tell the 12 images apart (no dead fc7 collapsing them onto one point), so the
    # ranking is a real one: no two index images tie.
    pairwise = np.linalg.norm(index[:, None] - index[None], axis=-1)
    assert pairwise[~np.eye(12, dtype=bool)].min() > 1e-3
    reference = np.linalg.norm(index[None] - result.queries.features[:, None], axis=-1)
    np.testing.assert_array_equal(
        result.indices, np.argsort(reference, axis=1, kind="stable")[:, :4]
    )
    np.testing.assert_allclose(result.distances, np.sort(reference, axis=1)[:, :4], rtol=1e-5)
    assert result.indices[:, 0].tolist() == [0, 1, 2]
    assert np.all(result.distances[:, 0] == 0) and np.all(result.distances[:, 1:] > 0)
    # The display images are the pixels (mean added back), grey like Fashion-MNIST.
    grey = result.queries.images.astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1
    figure = figures.plot_neighbours(
        result.queries.images, ["x"] * 3, result.index.images[result.indices],
        [["y"] * 4] * 3, result.distances,
    )  # fmt: skip
    path = str(tmp_path / "neighbours.png")
    assert figures.save_png(figure, path) == figures.png_size(figure) == (720, 520)
    assert png_shape(path) == (720, 520)  # (1.4 x 5 + 0.2) x (1.6 x 3 + 0.4) in, at 100 dpi.


def test_predictions_png(exported, tmp_path):
    paths = write_images(str(tmp_path))
    results = predict.predict_files(exported.path, paths)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    figure = figures.plot_predictions(images, paths, results, columns=2)
    path = str(tmp_path / "predictions.png")
    size = figures.save_png(figure, path)
    assert size == (600, 800)  # 2 columns x 3 in, 2 rows x 4 in, at 100 dpi.
    assert png_shape(path) == size
    with pytest.raises(ValueError, match="one name and prediction per image"):
        figures.plot_predictions(images, paths[:1], results)


def test_curves_png_and_history(run_dir, tmp_path):
    history = read_history(run_dir)
    assert history["epoch"].tolist() == [0, 1]
    assert {"loss", "top1", "top5", "val_loss", "learning_rate"} <= set(history)
    path = str(tmp_path / "curves.png")
    assert figures.save_png(figures.plot_curves(history), path) == (1500, 420)
    assert png_shape(path) == (1500, 420)  # 15 x 4.2 in at 100 dpi.
    resumed = tmp_path / "history.csv"  # A resumed run appends and may repeat an epoch.
    resumed.write_text("epoch,loss,top1\n0,2.0,0.1\n1,1.5,0.2\n1,1.4,\n2,1.0,0.5\n")
    history = read_history(str(resumed))
    assert history["epoch"].tolist() == [0, 1, 2]
    assert history["loss"].tolist() == [2.0, 1.4, 1.0] and np.isnan(history["top1"][1])
    with pytest.raises(FileNotFoundError, match="No training history"):
        read_history(str(tmp_path / "nowhere"))


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"alexnet_keras\[plots\]"):
        figures.new_figure(1, 1)


def run_cli(command, *args, env, cwd):
    """tools/visualize.py COMMAND ARGS; its stdout ends with `tensorflow loaded: True|False`."""
    script = os.path.join(REPO, "tools", "visualize.py")
    command = command_reporting_tensorflow(script, command, *args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_cli_filters_and_curves(run_dir, tmp_path):
    env, cwd = run_env(tmp_path), str(tmp_path)
    out = run_cli("filters", f"--model_dir={run_dir}", "--output=f.png", env=env, cwd=cwd)
    assert "Wrote f.png" in out and "column 1 (GPU 2): mean colour saturation" in out
    grid = filter_grid.model_filter_grid(load_run(run_dir).model)
    assert png_shape(tmp_path / "f.png") == (grid.image.shape[1], grid.image.shape[0])
    out = run_cli("curves", f"--model_dir={run_dir}", env=env, cwd=cwd)  # Default --output.
    assert png_shape(tmp_path / "curves.png") == (1500, 420)
    assert out.endswith("tensorflow loaded: False\n")  # A CSV file and matplotlib only.


@pytest.mark.slow
def test_cli_neighbours_and_predictions(run_dir, exported, fashion_dir, tmp_path):
    env, cwd = run_env(fashion_dir), str(tmp_path)
    out = run_cli("neighbours", f"--model_dir={run_dir}", "--queries=2", "--neighbours=3",
                  "--index_size=10", "--output=nn.png", env=env, cwd=cwd)  # fmt: skip
    assert "10 training images searched" in out
    assert png_shape(tmp_path / "nn.png") == (580, 360)  # (1.4 x 4 + 0.2) x (1.6 x 2 + 0.4) in.
    paths = write_images(cwd)
    run_cli("predictions", *paths, f"--saved_model={os.path.dirname(exported.path)}",
            "--output=p.png", env=env, cwd=cwd)  # fmt: skip
    assert png_shape(tmp_path / "p.png") == (900, 400)  # 3 columns x 3 in, 1 row x 4 in.
