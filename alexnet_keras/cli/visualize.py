"""Pictures of a trained AlexNet, as the paper shows them (CLI over `alexnet_keras.pictures`).

    python tools/visualize.py filters --model_dir=runs/demo --output=filters.png        # Fig. 3
    python tools/visualize.py predictions a.jpg b.png --saved_model=exports/alexnet \
        --output=predictions.png                                                   # Fig. 4, left
    python tools/visualize.py neighbours --model_dir=runs/demo --output=neighbours.png  # right
    python tools/visualize.py curves --model_dir=runs/demo --output=curves.png

filters writes conv1's 96 kernels (column 0 on top, column 1 below) and prints each column's mean
colour saturation; it needs only TensorFlow. The others need matplotlib (extra `plots`).
neighbours uses the run's dataset (or --dataset) through the training input pipeline.
"""

from __future__ import annotations

from absl import app, flags

from alexnet_keras.cli import common
from alexnet_keras.config import DEFAULT_MODEL_DIR

COMMANDS = ("filters", "predictions", "neighbours", "curves")


def define_flags() -> None:
    from alexnet_keras.config import DEFAULT_SAVED_MODEL

    flags.DEFINE_string("output", None, "PNG file to write (default: <command>.png).")
    flags.DEFINE_string("model_dir", DEFAULT_MODEL_DIR, "Training run directory.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which model of --model_dir.")
    flags.DEFINE_integer("scale", 4, "filters: pixels per kernel pixel.", lower_bound=1)
    flags.DEFINE_string("saved_model", DEFAULT_SAVED_MODEL, "predictions: export directory.")
    flags.DEFINE_integer("columns", 4, "predictions: images per row.", lower_bound=1)
    flags.DEFINE_string("dataset", None, "neighbours: dataset (default: the run's).")
    flags.DEFINE_string("data_dir", None, "neighbours: override the run's --data_dir.")
    flags.DEFINE_string("manual_dir", None, "neighbours: override the run's --manual_dir.")
    flags.DEFINE_integer("queries", 5, "neighbours: evaluation images to query.", lower_bound=1)
    flags.DEFINE_integer("neighbours", 6, "neighbours: nearest images shown.", lower_bound=1)
    flags.DEFINE_integer(
        "index_size", 2000, "neighbours: training images searched (the first N).", lower_bound=1
    )
    flags.DEFINE_integer("batch_size", 64, "neighbours: images per batch.", lower_bound=1)


def filters(output: str) -> None:
    from alexnet_keras import filter_grid, run_dir
    from alexnet_keras.pictures import filters as pictures

    f = flags.FLAGS
    grid = filter_grid.model_filter_grid(run_dir.load_run(f.model_dir, f.checkpoint).model, f.scale)
    pictures.write_png(grid.image, output)
    height, width, _ = grid.image.shape
    print(f"Wrote {output} ({width}x{height}): {grid.cells.shape[1]} kernels per column.")
    print(pictures.format_saturation(grid.saturation))


def predictions(output: str, paths: list[str]) -> None:
    import tensorflow as tf

    from alexnet_keras.data import pixels
    from alexnet_keras.pictures import figures
    from alexnet_keras.serving import predict

    f = flags.FLAGS
    results = predict.predict_files(f.saved_model, paths)
    images = [pixels.decode_image(tf.io.read_file(p)).numpy() for p in paths]
    size = figures.save_png(figures.plot_predictions(images, paths, results, f.columns), output)
    print(f"Wrote {output} ({size[0]}x{size[1]}).")


def neighbours(output: str) -> None:
    from alexnet_keras import run_dir
    from alexnet_keras.pictures import figures
    from alexnet_keras.pictures import neighbours as nn

    f = flags.FLAGS
    run = run_dir.load_run(f.model_dir, f.checkpoint)
    c = run.config
    result = nn.search(
        run.model, f.dataset or c.dataset, run.stats, c.image_size, c.resize_size,
        num_queries=f.queries, k=f.neighbours, index_size=f.index_size, batch_size=f.batch_size,
        data_dir=f.data_dir or c.data_dir, manual_dir=f.manual_dir or c.manual_dir,
    )  # fmt: skip
    names = result.class_names
    figure = figures.plot_neighbours(
        result.queries.images,
        [names[i] for i in result.queries.labels],
        result.index.images[result.indices],
        [[names[result.index.labels[j]] for j in row] for row in result.indices],
        result.distances,
    )
    size = figures.save_png(figure, output)
    searched = len(result.index.labels)
    print(f"Wrote {output} ({size[0]}x{size[1]}): {len(result.indices)} queries, {searched} "
          "training images searched by fc7 Euclidean distance.")  # fmt: skip


def curves(output: str) -> None:
    from alexnet_keras import run_files
    from alexnet_keras.pictures import figures

    history = run_files.read_history(flags.FLAGS.model_dir)
    size = figures.save_png(figures.plot_curves(history), output)
    print(f"Wrote {output} ({size[0]}x{size[1]}): {len(history['epoch'])} epochs.")


def _main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Usage: visualize.py {{{'|'.join(COMMANDS)}}} [IMAGE...] --flags")
    command, rest = argv[1], argv[2:]
    if command == "predictions" and not rest:
        raise app.UsageError("predictions needs image files: visualize.py predictions IMAGE...")
    if command != "predictions" and rest:
        raise app.UsageError(f"Unexpected arguments for {command}: {' '.join(rest)}")
    output = flags.FLAGS.output or f"{command}.png"
    if command != "curves":  # curves reads a CSV file and needs no TensorFlow.
        common.load_tensorflow_quietly()
    if command == "predictions":
        predictions(output, rest)
    else:
        {"filters": filters, "neighbours": neighbours, "curves": curves}[command](output)


def main() -> None:
    """`python tools/visualize.py` and the console script `alexnet-visualize`."""
    common.run(define_flags, _main, tensorflow=False)


if __name__ == "__main__":
    main()
