"""matplotlib figures: top-5 predictions (Fig. 4 left), fc7 neighbours (Fig. 4 right), curves.

matplotlib is the optional extra `plots` (`pip install alexnet_keras[plots]`), imported only
here and only when a figure is made. Figures are built on the Agg canvas directly, without pyplot,
so nothing global (backend, open-figure list) is touched. Each function returns the `Figure`;
`save_png` writes it at a fixed size: width x height inches x dpi, no tight cropping, so the
PNG's size is known in advance (`png_size`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from alexnet_keras.serving.client import Prediction

if TYPE_CHECKING:  # Only for annotations: matplotlib is optional.
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
INSTALL_HINT = "pip install 'alexnet_keras[plots]'"


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure of width x height inches on an Agg canvas (no pyplot, no GUI)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"Plotting needs matplotlib, the optional extra `plots`: {INSTALL_HINT}"
        ) from error
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def png_size(figure: Figure, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `save_png` writes for `figure`."""
    width, height = figure.get_size_inches()
    return round(width * dpi), round(height * dpi)


def save_png(figure: Figure, path: str, dpi: int = DPI) -> tuple[int, int]:
    """Writes `figure` as a PNG (parent directories created); returns its (width, height)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return png_size(figure, dpi)


def _short(name: str, width: int = 22) -> str:
    name = name.split(",")[0]  # ImageNet names list synonyms: "tabby, tabby cat".
    return name if len(name) <= width else name[: width - 1] + "~"


def _show(axes: Axes, image: np.ndarray, title: str, fontsize: float = 8) -> None:
    image = np.asarray(image)
    axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    axes.set_title(title, fontsize=fontsize)
    axes.set_xticks([])
    axes.set_yticks([])


def plot_predictions(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    predictions: Sequence[Prediction],
    columns: int = 4,
) -> Figure:
    """Each image over a bar chart of its top-k classes, best on top, as the paper's Fig. 4 left.

    Args:
        images: uint8 [h, w, 3] per image (any size).
        names: a title per image (e.g. the file name).
        predictions: `predict.predict_files` results (labels, scores, ids).
        columns: images per row.
    """
    if not len(images) == len(names) == len(predictions) or not images:
        raise ValueError(
            f"Need one name and prediction per image. Received: {len(images)} images, "
            f"{len(names)} names, {len(predictions)} predictions."
        )
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    figure = new_figure(3.0 * columns, 4.0 * rows)
    grid = figure.add_gridspec(2 * rows, columns, height_ratios=[2.4, 1.6] * rows,
                               hspace=0.35, wspace=0.6, left=0.12, right=0.97, top=0.95,
                               bottom=0.05)  # fmt: skip
    for i, (image, name, prediction) in enumerate(zip(images, names, predictions)):
        row, col = divmod(i, columns)
        _show(figure.add_subplot(grid[2 * row, col]), image, _short(os.path.basename(name), 30))
        bars = figure.add_subplot(grid[2 * row + 1, col])
        y = np.arange(len(prediction.scores))
        bars.barh(y, prediction.scores, color=["tab:red"] + ["tab:blue"] * (len(y) - 1))
        bars.set_yticks(y, [_short(label) for label in prediction.labels], fontsize=7)
        bars.invert_yaxis()  # Best class on top.
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
        for yi, score in zip(y, prediction.scores):
            bars.text(min(score + 0.02, 0.8), yi, f"{score:.2f}", va="center", fontsize=6)
    return figure


def plot_neighbours(
    query_images: np.ndarray,
    query_labels: Sequence[str],
    neighbour_images: np.ndarray,
    neighbour_labels: Sequence[Sequence[str]],
    distances: np.ndarray,
) -> Figure:
    """One row per query: the query, then its nearest training images by fc7 distance (Fig. 4).

    Args:
        query_images: uint8 [q, h, w, 3]. query_labels: q true class names.
        neighbour_images: uint8 [q, k, h, w, 3]. neighbour_labels: [q][k] true class names.
        distances: [q, k] Euclidean fc7 distances, nearest first.
    """
    num_queries, k = np.shape(distances)
    height = 1.6 * num_queries + 0.4
    figure = new_figure(1.4 * (k + 1) + 0.2, height)
    grid = figure.add_gridspec(
        num_queries, k + 1, left=0.01, right=0.99, top=1 - 0.35 / height, bottom=0.05 / height,
        wspace=0.08, hspace=0.45,
    )  # fmt: skip
    for q in range(num_queries):
        axes = figure.add_subplot(grid[q, 0])
        _show(axes, query_images[q], f"query: {_short(query_labels[q], 14)}", 7)
        for side in axes.spines.values():  # Frame the query, as the paper's first column.
            side.set_color("tab:red")
            side.set_linewidth(2)
        for j in range(k):
            title = f"{_short(neighbour_labels[q][j], 12)}\nd={distances[q, j]:.3g}"
            _show(figure.add_subplot(grid[q, j + 1]), neighbour_images[q, j], title, 6)
    return figure


def plot_curves(history: Mapping[str, np.ndarray]) -> Figure:
    """Loss, top-1/top-5 error (1 - accuracy) and learning rate against epoch, train and val.

    `history` is `run_files.read_history`'s columns; missing columns are left out. Epochs are
    counted from 1 (Keras logs them from 0).
    """
    if "epoch" not in history or not len(history["epoch"]):
        raise ValueError("The history has no epochs to plot.")
    epochs = np.asarray(history["epoch"]) + 1
    figure = new_figure(15.0, 4.2)
    panels = figure.subplots(1, 3)
    marker = "o" if len(epochs) < 30 else None

    def line(axes: Axes, values: np.ndarray, label: str, style: str = "-") -> None:
        axes.plot(epochs, values, style, marker=marker, markersize=3, label=label)

    for name, label in (("loss", "train"), ("val_loss", "validation")):
        if name in history:
            line(panels[0], history[name], label, "-" if name == "loss" else "--")
    for k in ("top1", "top5"):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + k in history:
                style = "-" if not prefix else "--"
                line(panels[1], 1.0 - history[prefix + k], f"{label} top-{k[-1]}", style)
    if "learning_rate" in history:
        line(panels[2], history["learning_rate"], "learning rate")
        if np.all(history["learning_rate"] > 0):
            panels[2].set_yscale("log")  # The paper divides by 10: equal steps on a log axis.
    titles = ("loss (cross-entropy)", "error (1 - accuracy)", "learning rate")
    for axes, title in zip(panels, titles):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        if axes.has_data() and axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    panels[1].set_ylim(bottom=0)
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    return figure
