"""The training command line: flag validation, SIGKILL-and-resume, multi-worker, evaluation."""

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from serving_fakes import free_ports
from train_helpers import (
    REPO,
    command_reporting_tensorflow,
    run_env,
    run_train,
    train_command,
    write_tiny_fashion_mnist,
)

from alexnet_keras.cli.train import config_from_flags, define_flags


def _parse(*args):
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["train", *args])
    return config_from_flags(flag_values)


def test_defaults_are_the_papers_recipe():
    config = _parse()
    assert (config.batch_size, config.learning_rate, config.momentum) == (128, 0.01, 0.9)
    assert (config.weight_decay, config.dropout, config.image_size) == (5e-4, 0.5, 227)
    assert (config.lr_schedule, config.max_lr_drops, config.dataset) == (
        "plateau",
        3,
        "imagenet2012",
    )
    assert config.kernel_initializer == config.bias_initializer == "paper"
    assert config.augment and config.ten_crop_eval and config.lighting_std == 0.1


def test_flagfile_recipe_parses():
    config = _parse(f"--flagfile={os.path.join(REPO, 'flags.txt')}")
    assert config.dataset == "imagenet2012" and config.epochs == 90 and config.batch_size == 128


@pytest.mark.parametrize(
    "args,match",
    [
        (["--batch_size=-1"], "--batch_size=-1 is invalid: expected a positive integer"),
        (["--image_size=32"], "--image_size=32 is invalid: expected an integer >= 67"),
        (["--epochs=0"], "--epochs=0"),
        (["--learning_rate=0"], "--learning_rate=0.0"),
        (["--stats_file=/no/such.json"], "--stats_file=/no/such.json is invalid: expected an"),
        (["--init_from=/no/such/run"], "--init_from=/no/such/run is invalid"),
        (["--steps_per_execution=0"], "--steps_per_execution=0 is invalid"),
        (["--manual_dir=/no/such/dir"], "--manual_dir=/no/such/dir"),
        (["--distribution=mirrored", "--devices=/cpu:0,/cpu:1", "--batch_size=7"],
         "--batch_size=7 is invalid: expected a multiple of the 2 replicas"),
        (["--distribution=towers", "--groups=1"], "--groups=1"),
        (["--lr_boundaries=30,20"], "--lr_boundaries"),
        (["--logical_devices=1"], "--logical_devices=1"),
    ],
)  # fmt: skip
def test_invalid_flag_values(args, match):
    with pytest.raises(ValueError, match=match):
        _parse(*args)


@pytest.mark.parametrize("args", [["--distribution=pipeline"], ["--mixed_precision=fp8"]])
def test_unknown_choices_fail_at_parse_time(args):
    with pytest.raises(flags.IllegalFlagValueError, match="should be one of"):
        _parse(*args)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--flagfile=/no/such/flags.txt"], "flags.txt"),
        (["stray_argument"], "Unexpected arguments"),
        (["--dataset=no_such_dataset"], "--dataset=no_such_dataset"),
        (["--dataset=fashion_mnist"], "apt-get install -y dataset-fashion-mnist"),
        (["--dataset=folder:/no/such/folder"], "Image folder '/no/such/folder'"),
        (["--batch_size=0"], "--batch_size=0 is invalid"),
    ],
)
def test_command_line_fails_fast_with_one_line(tmp_path, args, match):
    """A user error is one clear line on stderr and a non-zero exit, no traceback, no noise."""
    env = run_env(tmp_path / "missing")
    result = run_train([sys.executable, "-m", "alexnet_keras.train", *args,
                        f"--model_dir={tmp_path}/run"], env, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert match in result.stderr + result.stdout
    assert "Traceback" not in result.stderr and "cuInit" not in result.stderr
    assert "oneDNN" not in result.stderr  # TF's start-up lines are dropped.
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize(
    "module,args,match",
    [("alexnet_keras.train", ["--batch_size=0"], "--batch_size=0 is invalid"),
     ("alexnet_keras.train", ["--dataset=folder:/no/such/folder"], "Image folder '/no/such/"),
     ("alexnet_keras.evaluate", [], "No training run in --model_dir=")],
)  # fmt: skip
def test_bad_flags_a_mistyped_folder_or_run_are_refused_before_tensorflow_loads(
    tmp_path, module, args, match
):
    """In a fraction of a second, not the 5-10 s TensorFlow takes to import."""
    command = command_reporting_tensorflow(module, *args, f"--model_dir={tmp_path}/run")
    result = run_train(command, run_env(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("Error: ") and match in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # One line, no traceback.
    assert result.stdout.strip() == "tensorflow loaded: False"


@pytest.mark.parametrize(
    "command,flag",
    [(["-m", "alexnet_keras.train"], "--batch_size"), (["tools/export.py"], "--serving_precision")],
)
def test_help_lists_the_commands_own_flags(tmp_path, command, flag):
    """absl's --help shows the running module's key flags; ours are defined in alexnet_keras.cli
    (it showed none and pointed to --helpfull, where ~40 absl and TF flags bury them)."""
    result = run_train([sys.executable, *command, "--help"], run_env(tmp_path), timeout=120)
    assert f"  {flag}" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "--test_srcdir" not in result.stdout  # absl's own flags stay under --helpfull.


@pytest.mark.parametrize(
    "message",
    [  # The eager iterator's form, and --strict_data's under fit (TF 2.21).
        "{{function_node __wrapped__IteratorGetNext_output_types_3_device_/job:localhost/"
        "replica:0/task:0/device:CPU:0}} assertion failed: [Undecodable image (strict mode):] "
        "[/data/train/c0/bad.jpg] [at index] [3]\n\t [[{{node Assert/Assert}}]] "
        "[Op:IteratorGetNext] name: ",
        "Graph execution error:\n\nDetected at node Assert/AssertGuard/Assert defined at (most "
        "recent call last):\n<stack traces unavailable>\nError in user-defined function passed to "
        "MapDataset:47 transformation with iterator: Iterator::Root::Prefetch::ParallelBatch::"
        "ParallelMapV2: assertion failed: [Undecodable image (strict mode):] "
        "[/data/train/c0/bad.jpg] [at index] [3]\n\t [[{{node Assert/AssertGuard/Assert}}]]\n\t "
        "[[MultiDeviceIteratorGetNextFromShard]]\n\t [[RemoteCall]]\n\t [[IteratorGetNext]]",
    ],
)
def test_op_errors_print_without_tfs_wrappers(message):
    from alexnet_keras.cli import common

    assert common.op_error_text(message) == (
        "assertion failed: [Undecodable image (strict mode):] [/data/train/c0/bad.jpg] "
        "[at index] [3]"
    )


@pytest.mark.slow
def test_a_new_data_dir_is_created_and_the_missing_dataset_named(tmp_path):
    env = run_env(tmp_path / "missing")
    train = run_train(train_command(tmp_path / "run", f"--data_dir={tmp_path}/new/tfds"), env,
                      timeout=120)  # fmt: skip
    assert train.returncode == 2 and "dataset-fashion-mnist" in train.stderr
    assert os.path.isdir(tmp_path / "new" / "tfds")  # Created, as TFDS would.


def _checkpoint_step(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else None


# The training command with two test-only additions: every model file the run saves (the chief
# into --model_dir, another worker into its throwaway directory, which it deletes at the end) is
# also copied to $KEEP_DIR, so the test can compare what each worker trained; and each dropout
# layer writes there the cluster-wide replica index its masks are drawn for.
_TRAIN_KEEPING_SAVED_MODELS = textwrap.dedent("""
    import os, shutil, sys
    from alexnet_keras.cli.train import main
    from alexnet_keras import keras_file
    from alexnet_keras.training import training_model
    import tensorflow as tf

    per_replica_dropout = training_model.per_replica_dropout
    replicas = "file://" + os.path.join(os.environ["KEEP_DIR"], "dropout_replicas.txt")

    def recording_dropout(layer, inputs, training=False):
        if training:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            tf.print(layer.name, replica, output_stream=replicas)
        return per_replica_dropout(layer, inputs, training)

    training_model.per_replica_dropout = recording_dropout
    save = keras_file.save

    def save_and_keep(model, path, model_dir):
        save(model, path, model_dir)
        shutil.copyfile(path, os.path.join(os.environ["KEEP_DIR"], os.path.basename(path)))
        with open(os.path.join(os.environ["KEEP_DIR"], "saved_from.txt"), "a") as f:
            f.write(os.path.dirname(os.path.abspath(path)) + "\\n")

    keras_file.save = save_and_keep
    sys.argv[0] = "alexnet_keras.train"
    main()
""")


def _train_two_workers(tmp_path, model_dir, keep, *more_flags):
    """Runs the training command as a two-worker cluster; returns each worker's output. The ports
    are released before the workers bind them, so another process may take one first: then a
    worker cannot start its gRPC server, and the cluster is started again on new ports."""
    for attempt in range(3):
        workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
        processes, logs = [], [tmp_path / f"worker_{index}.log" for index in range(2)]
        for index in range(2):
            keep[index].mkdir(exist_ok=True)
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = run_env(tmp_path / "data", TF_CONFIG=json.dumps(tf_config),
                          KEEP_DIR=str(keep[index]))  # fmt: skip
            flags = train_command(model_dir, "--steps_per_epoch=3", "--validation_steps=1",
                                  *more_flags)[3:]  # fmt: skip
            flags[flags.index("--distribution=one_device")] = "--distribution=multi_worker"
            command = [sys.executable, "-c", _TRAIN_KEEPING_SAVED_MODELS, *flags]
            with open(logs[index], "w") as log:
                processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                                  stderr=subprocess.STDOUT, text=True))  # fmt: skip
        deadline = time.monotonic() + 300
        try:  # Until both end, or one fails (its peer would wait for it).
            while any(p.poll() is None for p in processes) and not any(p.poll() for p in processes):
                assert time.monotonic() < deadline, "the workers did not finish within 300 s"
                time.sleep(0.2)
        finally:
            for process in processes:
                process.kill()
                process.wait()
        outputs = [log.read_text() for log in logs]
        if attempt < 2 and any("Could not start gRPC server" in out for out in outputs):
            continue  # A port was taken meanwhile.
        for process in processes:  # Both outputs: the first failure may be the other's doing.
            assert process.returncode == 0, "\n".join(out[-3000:] for out in outputs)
        return outputs


def _assert_same_weights(first, second):
    import keras

    import alexnet_keras.layers  # noqa: F401  Registers the layers (this test may run alone).

    a_weights = keras.saving.load_model(first).get_weights()
    b_weights = keras.saving.load_model(second).get_weights()
    assert len(a_weights) == len(b_weights) > 0
    for a, b in zip(a_weights, b_weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_multi_worker_two_processes_train_the_same_weights(tmp_path):
    """Two workers (MultiWorkerMirroredStrategy), each reading its own shard: after 3 steps the
    chief's last.keras and the other worker's own copy are equal bit for bit (all-reduced
    gradients); two unsynchronised workers on different shards would differ. Each worker draws
    its dropout masks as its own replica. Run again with one
    more epoch, both resume from the chief's step-3 checkpoint (the other worker's own
    directory is gone) and stay equal; a worker starting over would hang or differ."""
    write_tiny_fashion_mnist(tmp_path / "data", n_train=64, n_test=16)
    model_dir = tmp_path / "run"
    keep = [tmp_path / f"kept_by_worker_{index}" for index in range(2)]
    outputs = _train_two_workers(tmp_path, model_dir, keep, "--epochs=1")
    assert _checkpoint_step(model_dir) == 3
    with open(model_dir / "metrics.json") as f:
        assert json.load(f)["examples"] == 16
    saved_from = [set((k / "saved_from.txt").read_text().split()) for k in keep]
    assert saved_from[0] == {str(model_dir)}
    assert len(saved_from[1]) == 1 and str(model_dir) not in saved_from[1]  # Its own directory.
    assert not os.path.exists(saved_from[1].pop())  # Removed when the worker exits.
    _assert_same_weights(model_dir / "last.keras", keep[1] / "last.keras")
    # Each worker drew its dropout masks as its own replica of the cluster (the mirrored tests
    # show that replicas with other indices draw other masks).
    for index in range(2):
        drawn = set((keep[index] / "dropout_replicas.txt").read_text().splitlines())
        assert drawn == {f"drop6 {index}", f"drop7 {index}"}, drawn
    # Each worker evaluated the same model: the same numbers.
    evaluated = [[line for line in out.splitlines() if "top-1 error" in line] for out in outputs]
    assert evaluated[0] == evaluated[1] and len(evaluated[0]) == 1

    outputs = _train_two_workers(tmp_path, model_dir, keep, "--epochs=2", "--allow_changes=epochs")
    for output in outputs:
        assert "at step 3." in output, output[-3000:]
    assert _checkpoint_step(model_dir) == 6
    with open(model_dir / "history.csv") as f:
        assert len(f.read().splitlines()) == 3  # Header and two epochs.
    _assert_same_weights(model_dir / "last.keras", keep[1] / "last.keras")


def _read_idx_gz(path):
    """A gzipped IDX file, parsed here (not with the package's reader): uint8 after the header."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.mark.slow
def test_evaluate_command_ten_crop_is_the_numpy_ten_crop_average(tmp_path):
    """`evaluate --ten_crop` on 12 Fashion-MNIST images (10 classes, so top-5 can miss) against
    NumPy: the paper's 10 windows of each 76x76 square cut in NumPy, the run's network per crop,
    softmax averaged and top-1/top-5 counted in NumPy. The run's weights are random (untrained:
    nothing here depends on what they learned)."""
    import dataclasses

    from export_helpers import STATS, write_run_dir

    from alexnet_keras.data.sources import FASHION_MNIST_CLASSES

    write_tiny_fashion_mnist(tmp_path / "data", n_train=16, n_test=12)
    env = run_env(tmp_path / "data")
    model_dir = tmp_path / "run"
    write_run_dir(model_dir, seed=2, classes=FASHION_MNIST_CLASSES,
                  run_stats=dataclasses.replace(STATS, mean_image=None))  # fmt: skip
    command = [sys.executable, "-m", "alexnet_keras.evaluate", f"--model_dir={model_dir}",
               "--ten_crop", "--checkpoint=last", "--batch_size=5"]  # fmt: skip
    result = run_train(command, env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert (metrics["crops"], metrics["examples"], metrics["split"]) == (10, 12, "test")
    assert "top-1 error" in result.stdout

    from alexnet_keras.data import geometry
    from alexnet_keras.run_dir import load_run

    images = _read_idx_gz(tmp_path / "data" / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx_gz(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").astype(int)
    loaded = load_run(str(model_dir), "last")  # The float32 network evaluate builds.
    assert loaded.stats.mean_image is None
    size = loaded.config.image_size
    square_size = loaded.config.resize_size or geometry.default_resize_size(size)  # 76
    far, mid = square_size - size, (square_size - size) // 2
    probabilities = []
    for image in images:
        square = geometry.resize_shorter_and_center_crop(image[..., None], square_size).numpy()
        assert square.shape == (square_size, square_size, 3)  # Grey made RGB.
        square = square - np.float32(loaded.stats.mean_rgb)
        windows = [square[y : y + size, x : x + size]
                   for y, x in [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]]  # fmt: skip
        crops = np.stack(windows + [w[:, ::-1] for w in windows])
        logits = np.asarray(loaded.model(crops, training=False), np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities.append((e / e.sum(axis=1, keepdims=True)).mean(axis=0))
    ranks = np.argsort(-np.stack(probabilities), axis=1, kind="stable")
    # Untrained weights, so check the counts below mean something: the network tells the images
    # apart, and top-5 both hits and misses (0.25 and 0.5 on an AMX Xeon).
    assert len(set(ranks[:, 0])) > 1 and 0 < metrics["top5_accuracy"] < 1
    assert metrics["top1_accuracy"] == pytest.approx(np.mean(ranks[:, 0] == labels))
    assert metrics["top5_accuracy"] == pytest.approx(
        np.mean((ranks[:, :5] == labels[:, None]).any(1))
    )


def test_towers_has_one_replica_so_any_batch_size_works():
    config = _parse("--distribution=towers", "--devices=/cpu:0,/cpu:1", "--batch_size=7")
    assert config.batch_size == 7
    with pytest.raises(ValueError, match="distinct devices"):
        _parse("--distribution=mirrored", "--devices=/cpu:0,/cpu:0")
