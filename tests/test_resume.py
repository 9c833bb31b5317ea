"""Exact, guarded resume: a killed run continues as if nothing happened, bit for bit.

Runs the real training code (tests/resume_run.py: the command's flags and `run()`) on tiny
Fashion-MNIST files in fresh processes, SIGKILLs them at chosen steps, reruns the same command,
and compares the final weights and history.csv with an uninterrupted run's.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import saved_model_checks
import tensorflow as tf
from train_helpers import (
    FC_UNITS,
    REPO,
    run_env,
    tiny_config,
    tiny_datasets,
    write_tiny_fashion_mnist,
)

from alexnet_keras import config as config_lib
from alexnet_keras.config import TrainConfig
from alexnet_keras.serving import export
from alexnet_keras.training import callbacks as cb
from alexnet_keras.training import checkpoints, resume
from alexnet_keras.training.trainer import run

STEPS, EPOCHS = 6, 3  # 6 steps of 8 images an epoch; a pass over the 64 images is 8 steps.
FLAGS = [
    "--dataset=fashion_mnist", "--image_size=67", "--batch_size=8", f"--epochs={EPOCHS}",
    f"--steps_per_epoch={STEPS}", "--checkpoint_every_steps=2", "--kernel_initializer=he_normal",
    "--bias_initializer=zeros", "--input_scale=0.015625", "--lr_schedule=plateau",
    "--plateau_patience=1", "--noten_crop_eval", "--mixed_precision=none", "--deterministic",
    f"--fc_units={FC_UNITS}",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion")
    write_tiny_fashion_mnist(directory, n_train=64, n_test=16)
    return directory


def _train(model_dir, data, *extra, kill_at=None, when="batch_end"):
    command = [sys.executable, os.path.join(REPO, "tests", "resume_run.py")]
    if kill_at:
        command += [f"--kill_at={kill_at}", f"--kill_when={when}"]
    command += ["--", *FLAGS, f"--model_dir={model_dir}", *extra]
    done = subprocess.run(command, env=run_env(data), cwd=REPO, capture_output=True, text=True,
                          timeout=400)  # fmt: skip
    if kill_at:
        assert done.returncode == -9, done.stderr[-3000:]  # Killed, not finished or crashed.
    else:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(model_dir):
    model = keras.saving.load_model(os.path.join(model_dir, "last.keras"), compile=False)
    return model.get_weights()


def _assert_same_run(reference, resumed):
    for a, b in zip(_weights(reference), _weights(resumed), strict=True):
        np.testing.assert_array_equal(a, b)  # Bit for bit.
    for name in ("history.csv", "lr_state.json", "metrics.json"):
        with open(os.path.join(reference, name)) as f, open(os.path.join(resumed, name)) as g:
            assert f.read() == g.read(), name


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_keeps_the_checkpoints(tmp_path, data):
    model_dir = tmp_path / "run"
    # Many epochs: the run cannot end before the signal arrives, whenever that is.
    command = [sys.executable, "-m", "alexnet_keras.train", *FLAGS, f"--model_dir={model_dir}",
               "--epochs=1000"]  # fmt: skip
    process = subprocess.Popen(
        command, env=run_env(data), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    checkpoints = model_dir / "checkpoints"
    deadline = time.monotonic() + 300
    # A checkpoint after step 0's (saved as fit begins, before the Ctrl-C callback's own
    # begin): the run is among fit's batches.
    while (tf.train.latest_checkpoint(checkpoints) or "ckpt-0").endswith("ckpt-0"):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint after step 0 within 300 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "Ctrl-C: stopping at the next batch" in stderr  # Inside fit: not raised at once.
    assert "Interrupted. Run the same command again to continue" in stderr
    assert "Traceback" not in stderr
    assert tf.train.latest_checkpoint(checkpoints)


# The training command with Ctrl-C at the first epoch end (after the model files are saved), as
# it lands where a raised KeyboardInterrupt never reaches the command. "in_del": inside a
# `__del__` method, where Python would only print "Exception ignored" and go on. "twice": a
# second Ctrl-C stops at once, and its KeyboardInterrupt comes out as another error, as C code
# that had called back into Python turned it (in a fresh clone, exit 1 with a traceback; in CI
# a traceback TF printed).
_CTRL_C_AT_THE_FIRST_EPOCH_END = """
import runpy, signal, sys
from alexnet_keras import keras_file

how = sys.argv.pop(1)

class Collected:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)
        for _ in range(100_000):  # The handler runs here, inside __del__.
            pass

def twice():
    signal.raise_signal(signal.SIGINT)
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None

save = keras_file.save
saved = []

def save_then_interrupt(model, path, model_dir):  # Once: the epoch end saves last and best.
    save(model, path, model_dir)
    if not saved:
        saved.append(path)
        Collected() if how == "in_del" else twice()

keras_file.save = save_then_interrupt
sys.argv[0] = "alexnet_keras.train"
runpy.run_module("alexnet_keras.train", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["in_del", "twice"])
def test_ctrl_c_wherever_it_lands_stops_the_run_with_one_message(tmp_path, data, how):
    """In fit, Ctrl-C is only remembered and the next batch stops the run: none lands inside a
    `__del__` (before: "Exception ignored", then both epochs trained) or inside C code. A second
    Ctrl-C stops at once, and any error it comes out as is the interruption."""
    command = [sys.executable, "-c", _CTRL_C_AT_THE_FIRST_EPOCH_END, how, *FLAGS, "--epochs=2",
               f"--model_dir={tmp_path}/run"]  # fmt: skip
    done = subprocess.run(
        command, env=run_env(data), cwd=REPO, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "Ctrl-C: stopping at the next batch (press it again to stop now)." in done.stderr
    assert "Interrupted. Run the same command again to continue" in done.stderr
    # Once, the run stops at the next batch, after epoch 1's checkpoint; twice, inside epoch 1's
    # end, whose checkpoint comes last (a checkpointed epoch is complete): step 4's.
    last = {"in_del": "ckpt-6", "twice": "ckpt-4"}[how]
    assert tf.train.latest_checkpoint(tmp_path / "run" / "checkpoints").endswith(last)


def test_ctrl_c_in_fit_waits_for_a_batch_and_outside_fit_or_twice_stops_at_once():
    ctrl_c = cb.StopOnCtrlC()
    with pytest.raises(KeyboardInterrupt):  # Before fit: data preparation, tracing of set-up.
        ctrl_c.handle_sigint(signal.SIGINT, None)
    ctrl_c = cb.StopOnCtrlC()
    ctrl_c.on_train_begin()
    ctrl_c.on_train_batch_begin(0)
    ctrl_c.handle_sigint(signal.SIGINT, None)  # Remembered, not raised.
    for batch_begin in (ctrl_c.on_train_batch_begin, ctrl_c.on_test_batch_begin):
        with pytest.raises(KeyboardInterrupt):
            batch_begin(1)
    with pytest.raises(KeyboardInterrupt):  # Again: at once.
        ctrl_c.handle_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # Remembered after the last batch: fit still stops.
        ctrl_c.on_train_end()
    ctrl_c = cb.StopOnCtrlC()
    ctrl_c.on_train_begin()
    ctrl_c.on_train_end()
    with pytest.raises(KeyboardInterrupt):  # After fit (the final evaluation): at once.
        ctrl_c.handle_sigint(signal.SIGINT, None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The same command, never interrupted."""
    model_dir = tmp_path_factory.mktemp("reference") / "run"
    _train(model_dir, data, "--seed=1")
    return model_dir


@pytest.mark.slow
def test_killed_anywhere_resumes_bit_for_bit(tmp_path, data, reference):
    """Killed mid-epoch, between an epoch's last step and its validation, right after a
    checkpoint: the same final weights, history and metrics as the uninterrupted run."""
    model_dir = tmp_path / "run"
    checkpoints = model_dir / "checkpoints"
    _train(model_dir, data, "--seed=1", kill_at=9)  # Mid epoch 2 (steps 7-12), after ckpt 8.
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-8")
    _train(model_dir, data, "--seed=1", kill_at=12)  # Epoch 2's last step, before validation.
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-10")  # Not 12: not validated.
    _train(model_dir, data, "--seed=1", kill_at=16, when="batch_begin")  # Just after ckpt 16.
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-16")
    resumed = _train(model_dir, data, "--seed=1")
    assert "Resumed from" in resumed.stderr and "at step 16" in resumed.stderr
    _assert_same_run(reference, model_dir)


@pytest.mark.slow
def test_mirrored_run_resumes_bit_for_bit(tmp_path, data):
    """Two replicas killed mid epoch 2 (after ckpt 10) and resumed: the uninterrupted run's
    weights, history (each replica's metric sums restored) and metrics. Two epochs and the last
    model's final evaluation suffice (the test above covers `best` across a resume)."""
    mirrored = ["--seed=2", "--distribution=mirrored", "--logical_devices=2", "--epochs=2",
                "--final_checkpoint=last"]  # fmt: skip
    uninterrupted, killed = tmp_path / "a", tmp_path / "b"
    _train(uninterrupted, data, *mirrored)
    _train(killed, data, *mirrored, kill_at=11)
    _train(killed, data, *mirrored)
    _assert_same_run(uninterrupted, killed)
    exported = export.export_saved_model(  # What a mirrored run exports loads on TF Serving.
        export.resolve_source(str(killed)), str(tmp_path / "exports"), write_warmup=False
    )
    saved_model_checks.assert_servable(exported.path)


def test_each_replicas_running_metric_sums_come_back_exactly(tmp_path):
    """An epoch resumed midway gets each replica's own metric sums back, not their total split
    evenly. Replica sums (1, 2**24), then 1 more on replica 0, read 2**24 + 2 in float32; split
    evenly as (2**23, 2**23) they would read 2**24 (2**24 + 1 rounds to even). The mirrored
    resume test above ended 2 ulps off in history.csv this way (one intra-op thread)."""

    def state_of_a_mean_metric():
        with strategy.scope():
            metric = keras.metrics.Mean(name="loss")
            model = type("Model", (), {})()  # What RunState reads of a TrainingModel.
            model.metrics_variables, model.network = metric.variables, keras.Sequential()
            model.optimizer = keras.optimizers.SGD()
            return checkpoints.RunState(model, str(tmp_path)), metric

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    state, metric = state_of_a_mean_metric()
    total = metric.variables[0].value
    for part, value in zip(checkpoints.replica_parts(total), (1.0, 2.0**24)):
        part.assign(value)
    state.save(5)
    resumed, metric = state_of_a_mean_metric()
    assert resumed.restore_latest() == 0  # No step taken; the sums are what matters here.
    restore = cb.RestoredEpochMetrics(resumed.metric_sums())
    restore.on_epoch_begin(0)
    total = metric.variables[0].value
    parts = checkpoints.replica_parts(total)
    assert [float(p.numpy()) for p in parts] == [1.0, 2.0**24]
    parts[0].assign_add(1.0)  # Replica 0's next step.
    assert float(total.numpy()) == 2.0**24 + 2


@pytest.mark.slow
def test_without_seed_a_resumed_run_keeps_its_data_order(tmp_path, data):
    """Killed mid epoch 2, resumed without --seed: run.json's drawn data seed is kept and the run
    ends where it would have (two epochs and the last model's evaluation suffice)."""
    model_dir = tmp_path / "run"
    short = ["--epochs=2", "--final_checkpoint=last"]
    _train(model_dir, data, *short, kill_at=9)
    with open(model_dir / "run.json") as f:
        recorded = json.load(f)
    _train(model_dir, data, *short)
    with open(model_dir / "run.json") as f:
        assert json.load(f) == recorded  # The same data seed: the epoch's order goes on.
    rows = open(model_dir / "history.csv").read().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1]
    assert tf.train.latest_checkpoint(model_dir / "checkpoints").endswith(f"ckpt-{STEPS * 2}")


@pytest.mark.slow
def test_changed_settings_are_refused_and_named(tmp_path):
    config = tiny_config(tmp_path, epochs=1, seed=3)
    run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=2))
    changed = tiny_config(tmp_path, epochs=2, batch_size=4, seed=None)
    with pytest.raises(ValueError) as error:
        run(changed, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(batch=4, steps=2))
    message = str(error.value)
    assert "--batch_size recorded 8, now 4" in message and "--epochs recorded 1, now 2" in message
    assert "--seed recorded 3, now not set" in message
    assert "--allow_changes=epochs" in message and "new --model_dir" in message
    with pytest.raises(ValueError, match="--batch_size recorded 8, now 4"):  # Not allowable.
        run(changed, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(batch=4, steps=2),
            allow_changes=["epochs"])  # fmt: skip
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["epochs"] == 1  # Nothing was changed.
    more = tiny_config(tmp_path, epochs=2, seed=3, checkpoint_every_steps=1)  # A free change.
    run(more, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=2),
        allow_changes=["epochs"])  # fmt: skip
    with open(tmp_path / "config.json") as f:
        recorded = json.load(f)
    assert recorded["epochs"] == 2 and recorded["checkpoint_every_steps"] == 1
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-4")


def test_a_run_from_before_input_dtype_resumes_on_float32_crops(tmp_path):
    """config.json files written before --input_dtype existed trained on float32 crops; their
    resume must not switch to the rounded uint8 stream unasked."""
    values = json.loads(tiny_config(tmp_path).to_json())
    del values["input_dtype"]
    old = TrainConfig.from_json(json.dumps(values))
    assert old.input_dtype == "float32" and tiny_config(tmp_path).input_dtype == "auto"
    assert "input_dtype" in config_lib.ALLOWED_CHANGES


def test_readme_names_every_allowed_change():
    readme = open(os.path.join(REPO, "README.md")).read()
    paragraph = readme[readme.index("`--allow_changes=epochs`") :].split("\n\n")[0]
    named = {name for name in config_lib.ALLOWED_CHANGES if f"`{name}`" in paragraph}
    assert named | {"epochs"} == set(config_lib.ALLOWED_CHANGES)


def test_unknown_allowed_change_and_foreign_directory_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ValueError, match="holds no config.json: it is not an alexnet_keras run"):
        run(tiny_config(tmp_path), tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets())
    assert os.listdir(tmp_path) == ["notes.txt"]
    with pytest.raises(ValueError, match="--allow_changes=batch_size is invalid"):
        resume.resumed_config(str(tmp_path), tiny_config(tmp_path), None, "none", ("batch_size",))


@pytest.mark.slow
def test_corrupt_checkpoint_falls_back_to_the_previous_one_and_keeps_it(tmp_path, caplog):
    config = tiny_config(tmp_path, epochs=1, seed=3, checkpoint_every_steps=1)
    run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=3))
    latest = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    assert latest.endswith("ckpt-3")
    data_file = next(p for p in os.listdir(tmp_path / "checkpoints") if "ckpt-3.data" in p)
    with open(tmp_path / "checkpoints" / data_file, "r+b") as f:
        f.truncate(100)  # A write cut short.
    more = tiny_config(tmp_path, epochs=2, seed=3, checkpoint_every_steps=1)
    with caplog.at_level("WARNING"):
        run(more, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=3),
            allow_changes=["epochs"])  # fmt: skip
    assert (
        "ckpt-3 cannot be read" in caplog.text and "going back to the previous one" in caplog.text
    )
    assert data_file in os.listdir(tmp_path / "checkpoints" / "corrupt")  # Kept, not deleted.
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-6")
    # The checkpoints before the bad one are still the manager's: deleted as newer ones come.
    indexes = sorted(p for p in os.listdir(tmp_path / "checkpoints") if p.endswith(".index"))
    assert indexes == ["ckpt-4.index", "ckpt-5.index", "ckpt-6.index"]


def test_no_readable_checkpoint_stops_and_keeps_them_all(tmp_path):
    """Not a silent start from scratch in a directory full of (unreadable) progress."""
    config = tiny_config(tmp_path, epochs=1, seed=3, checkpoint_every_steps=1)
    run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=2))
    checkpoints = tmp_path / "checkpoints"
    data_files = sorted(p for p in os.listdir(checkpoints) if ".data" in p)
    assert len(data_files) == 3  # Steps 0, 1 and 2.
    for name in data_files:
        with open(checkpoints / name, "r+b") as f:
            f.truncate(100)
    more = tiny_config(tmp_path, epochs=2, seed=3, checkpoint_every_steps=1)
    with pytest.raises(ValueError, match=f"No checkpoint in {checkpoints} can be read"):
        run(more, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=2),
            allow_changes=["epochs"])  # fmt: skip
    assert sorted(p for p in os.listdir(checkpoints / "corrupt") if ".data" in p) == data_files


@pytest.mark.slow
def test_float16_skipped_steps_still_count(tmp_path, monkeypatch):
    """The loss scale skips overflowing float16 steps; the run's step counter does not."""
    from alexnet_keras.training import trainer

    monkeypatch.setattr(trainer, "INITIAL_LOSS_SCALE", 2.0**60)  # Every gradient overflows.
    # final_checkpoint=last: no float16 evaluation of best.keras after the run.
    config = tiny_config(tmp_path, epochs=2, mixed_precision="float16", checkpoint_every_steps=2,
                         final_checkpoint="last")  # fmt: skip
    run(config, tf.distribute.OneDeviceStrategy("/cpu:0"), tiny_datasets(steps=3))
    state = tf.train.get_checkpoint_state(tmp_path / "checkpoints")
    steps = sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)
    assert steps == [2, 3, 4, 6][-len(steps) :] and steps[-1] == 6  # Named by the run's steps.
    reader = tf.train.load_checkpoint(state.model_checkpoint_path)
    names = {name for name, _ in tf.train.list_variables(state.model_checkpoint_path)}
    iterations = next(n for n in names if n.startswith("optimizer/") and "iteration" in n)
    assert reader.get_tensor(iterations) < 6  # The optimizer did skip steps.
    rows = open(tmp_path / "history.csv").read().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1]  # Epochs follow the run's steps.
