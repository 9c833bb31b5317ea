"""The paper's two columns on two devices (Sec. 3.2), checked where it takes effect.

Every check reads the executed graph of a real Keras training step on two logical CPUs with soft
placement off (TF's debugger, tests/executed_placement.py): which device each op ran on, forward
and backward, and every tensor that crossed between the devices.
"""

import collections
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from executed_placement import trace

from alexnet_keras.config import TrainConfig
from alexnet_keras.layers import winograd
from alexnet_keras.model import build_alexnet
from alexnet_keras.training import device_input, strategies, trainer

TOWERS = ("/cpu:0", "/cpu:1")
SIZE, BATCH, CLASSES = 67, 4, 10
HEAVY = (
    "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul", "MaxPool", "MaxPoolGrad",
    "Relu", "ReluGrad", "BiasAddGrad",
)  # fmt: skip
SMALL = dict(kernel_initializer="he_normal", bias_initializer="zeros", input_scale=1 / 64)


def _config(**overrides):
    values = dict(
        image_size=SIZE, batch_size=BATCH, distribution="towers", devices=TOWERS,
        mixed_precision="none", **SMALL,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _batch(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 50, (n, SIZE, SIZE, 3)).astype(np.float32)
    return images, (np.arange(n) % CLASSES).astype(np.int32)


@pytest.fixture(scope="module", params=["direct", "winograd"])
def towers_step(request, tmp_path_factory):
    """One towers training step of the real compiled model, traced on the executed graph, with
    conv3-conv5 as TF's convolutions and as Winograd's batched matmuls (AVX2 CPUs' form)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "runs_in", lambda dtype: request.param == "winograd")
        model = trainer.compile_alexnet(_config(), CLASSES, TOWERS, replicas=1)
        data = tf.data.Dataset.from_tensors(_batch()).repeat()
        placement = trace(
            lambda: model.fit(data, steps_per_epoch=1, verbose=0),
            dump_root=str(tmp_path_factory.mktemp("dump")),
        )
    return model, placement, request.param


def test_every_heavy_op_family_runs_half_on_each_device(towers_step):
    _, placement, form = towers_step
    counts = placement.devices_by_type()
    # Winograd's conv3-conv5: a batched matmul forward and one per gradient, in each column.
    heavy = (*HEAVY, "BatchMatMulV2") if form == "winograd" else HEAVY
    for op_type, shares in placement.work_by_type(heavy).items():
        assert set(shares) == {"CPU:0", "CPU:1"}, op_type
        assert shares["CPU:0"] == pytest.approx(0.5, abs=0.02), (op_type, shares)
        assert counts[op_type]["CPU:0"] == counts[op_type]["CPU:1"], (op_type, counts[op_type])
    direct = 2 if form == "winograd" else 5  # conv1 and conv2 (and conv3-conv5).
    assert counts["Conv2DBackpropFilter"] == {"CPU:0": direct, "CPU:1": direct}
    if form == "winograd":
        assert counts["BatchMatMulV2"] == {"CPU:0": 9, "CPU:1": 9}
    # conv3-conv5, fc6 and fc7: conv1's and conv2's ReLU gradients run inside lrn1/lrn2's.
    assert counts["ReluGrad"] == {"CPU:0": 5, "CPU:1": 5}
    # conv2-conv5 need input gradients. TF's Conv2D gradient also builds conv1's, which feeds
    # nothing and is pruned at run time (only the debugger's instrumentation keeps it alive).
    consumed = {producer for producer, _, _ in placement.edges}
    live = collections.Counter(
        op.device
        for i, op in enumerate(placement.ops)
        if op.type == "Conv2DBackpropInput" and i in consumed
    )
    assert live == {"CPU:0": direct - 1, "CPU:1": direct - 1}


def test_updates_run_next_to_their_variables(towers_step):
    model, placement, _ = towers_step
    for variable in model.trainable_variables:
        column = variable.path.rsplit("_", 1)[-1]
        assert variable.value.device.endswith(f"CPU:{column}"), variable.path
    for momentum in model.optimizer.momentums:
        assert momentum.value.device.endswith(f"CPU:{momentum.path.rsplit('_', 2)[-2]}")
    updates = placement.devices_by_type()
    applied = updates["ResourceApplyKerasMomentum"] + updates["PartitionedCall"]
    assert applied["CPU:0"] == applied["CPU:1"]  # Biases fused kernel, kernels the XLA update.
    assert strategies.bytes_per_device(model.trainable_variables) == {
        "CPU:0": model.count_params() * 2,  # Exactly half of the float32 weights each.
        "CPU:1": model.count_params() * 2,
    }


def _layer(op_name):
    found = re.search(r"/(input_scale|conv\d|lrn\d|pool\d|fc\d|drop\d)_?\d*/", op_name)
    return found.group(1) if found else op_name


def test_only_the_papers_exchanges_cross_devices(towers_step):
    """Sec. 3.2: the columns meet at conv3's input and the fc layers; the images feed both."""
    _, placement, _ = towers_step
    sent = collections.Counter()  # TF sends a tensor once to each device that reads it.
    seen = set()
    for c in placement.crossings():
        if c.nbytes <= 64 or (c.producer.name, c.slot, c.consumer.device) in seen:
            continue  # Scalars (learning rate, dropout seeds); a tensor already counted.
        seen.add((c.producer.name, c.slot, c.consumer.device))
        backward = c.producer.name.startswith("gradient_tape/")
        # A forward exchange is read by the next layer; its gradient comes from that layer.
        layer = _layer(c.producer.name if backward else c.consumer.name)
        assert layer in {"conv1", "conv3", "fc6", "fc7", "fc8"}, (c.producer.name, c.consumer)
        assert layer != "conv1" or _layer(c.producer.name) == "input_scale"  # The images.
        kind = "images" if layer == "conv1" else "backward" if backward else "forward"
        sent[kind, c.consumer.device] += c.nbytes
    f = 4  # Bytes per float32; at 67x67 pool2 is 3x3 and pool5 1x1.
    exchange = BATCH * f * (3 * 3 * 128 + 1 * 1 * 128 + 2048 + 2048)  # pool2, pool5, drop6, 7.
    logits = BATCH * f * CLASSES // 2  # Column 1's logits to device 0, their gradient back.
    assert dict(sent) == {
        ("images", "CPU:1"): BATCH * SIZE * SIZE * 3 * f,
        ("forward", "CPU:0"): exchange + logits,
        ("forward", "CPU:1"): exchange,
        ("backward", "CPU:0"): exchange,
        ("backward", "CPU:1"): exchange + logits,
    }
    total = sum(sent.values())
    assert total <= placement.crossing_bytes() <= total + 8 * 64  # Plus a few scalars.


def test_towers_equal_one_device_logits_and_gradients():
    kwargs = dict(num_classes=CLASSES, input_shape=(SIZE, SIZE, 3), dropout=0.0, seed=5, **SMALL)
    one, towers = build_alexnet(**kwargs), build_alexnet(tower_devices=TOWERS, **kwargs)
    towers.set_weights(one.get_weights())
    images, labels = _batch()

    @tf.function
    def loss_and_grads(model):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return logits, tape.gradient(loss, model.trainable_variables)

    logits_one, grads_one = loss_and_grads(one)
    logits_towers, grads_towers = loss_and_grads(towers)
    # The same ops in another grouping: equal to float32 rounding (measured <= 1e-7 absolute).
    np.testing.assert_allclose(logits_towers.numpy(), logits_one.numpy(), rtol=1e-6, atol=1e-6)
    for variable, a, b in zip(one.trainable_variables, grads_one, grads_towers):
        np.testing.assert_allclose(
            b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=variable.path
        )


def test_mirrored_step_equals_one_device_step_on_the_global_batch():
    """Two replicas of 4 images each take the step one device takes on the 8 together: every
    replica's copy of the weights and of the momentum ends equal to the one-device values."""
    images, labels = _batch(8, seed=1)
    config = _config(distribution="one_device", devices=(), batch_size=8, dropout=0.0)
    states = {}
    for name, strategy in (
        ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
        # Not collective ops: their instance keys restart per strategy, and a later strategy in
        # this process (tests/test_train.py's) with other shapes would collide with them.
        ("mirrored", tf.distribute.MirroredStrategy(TOWERS, tf.distribute.ReductionToOneDevice())),
    ):
        with strategy.scope():
            keras.utils.set_random_seed(7)
            model = trainer.compile_alexnet(config, CLASSES, None, strategy.num_replicas_in_sync)
        model.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)
        variables = [*model.trainable_variables, *model.optimizer.momentums]
        states[name] = [
            [copy.numpy() for copy in strategy.experimental_local_results(v.value)]
            for v in variables
        ]
    assert all(len(copies) == 2 for copies in states["mirrored"])
    for (one,), mirrored in zip(states["one"], states["mirrored"]):
        for copy in mirrored:
            np.testing.assert_allclose(copy, one, rtol=1e-5, atol=1e-8)
    momentum = states["one"][len(states["one"]) // 2][0]
    assert np.abs(momentum).max() > 1e-5  # The step did move the weights.


@pytest.mark.parametrize(
    "distribution,devices,match",
    [
        ("towers", ("/cpu:0", "/cpu:7"), "/cpu:7 does not exist.*--logical_devices=2"),
        ("towers", ("/cpu:0",), "needs two devices|exactly two devices"),
    ],
)
def test_towers_needs_two_existing_devices(distribution, devices, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(distribution=distribution, devices=devices)
        strategies.make_strategy(distribution, devices)


def test_mirrored_uint8_batches_are_finished_on_each_replicas_device(tmp_path):
    """--input_dtype=uint8: each replica's crops are cast and shifted on its own device (the
    executed graph says so), and no image crosses between the devices."""
    images, labels = _batch(8, seed=2)
    crops = np.clip(images + 128, 0, 255).astype(np.uint8)
    shifts = np.full((8, 3), -128, np.float32)
    strategy = tf.distribute.MirroredStrategy(TOWERS, tf.distribute.ReductionToOneDevice())
    config = _config(distribution="mirrored", batch_size=8)
    with strategy.scope():
        model = trainer.compile_alexnet(config, CLASSES, None, strategy.num_replicas_in_sync)
    model.train_step = device_input.finish_pixels_on_device(model.train_step)
    data = tf.data.Dataset.from_tensors(((crops, shifts), labels)).repeat()
    placement = trace(
        lambda: model.fit(data, steps_per_epoch=1, verbose=0), dump_root=str(tmp_path)
    )
    producers = collections.defaultdict(list)
    for p, slot, c in placement.edges:
        producers[c].append(placement.ops[p].outputs.get(slot))
    casts = [
        op.device
        for i, op in enumerate(placement.ops)
        if op.type == "Cast" and any(o and o.dtype == "uint8" for o in producers[i])
    ]
    assert collections.Counter(casts) == {"CPU:0": 1, "CPU:1": 1}
    finished = {  # The float32 images each replica computed from its crops.
        op.device
        for op in placement.ops
        for o in op.outputs.values()
        if o.dtype == "float32" and o.shape == (4, SIZE, SIZE, 3)
    }
    assert finished == {"CPU:0", "CPU:1"}
    moved = [  # Image-shaped tensors that crossed (the gradients' reduction crosses too).
        (c.producer.name, c.consumer.device)
        for c in placement.crossings()
        if c.slot in c.producer.outputs and c.producer.outputs[c.slot].shape[1:] == (SIZE, SIZE, 3)
    ]
    assert moved == []  # Each replica's uint8 batch arrives on its device and is finished there.
