"""The paper's two columns on two devices (Sec. 3.2), checked where it takes effect, and dropout
across devices: each MirroredStrategy replica and each towers column draws its own masks.

The placement checks read the executed graph of a real Keras training step on two logical CPUs
with soft placement off (TF's debugger, tests/executed_placement.py): which device each op ran on,
forward and backward, every variable update, and every tensor that crossed between the devices.
"""

import collections
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from executed_placement import trace

from alexnet_keras.config import TrainConfig
from alexnet_keras.model import build_alexnet
from alexnet_keras.training import optimizer, strategies, towers, trainer
from alexnet_keras.training.training_model import TrainingModel, per_replica_dropout

TOWERS = ("/cpu:0", "/cpu:1")
SIZE, BATCH, CLASSES = 67, 4, 10
HEAVY = (
    "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul", "MaxPool", "MaxPoolGrad",
    "Relu", "ReluGrad",
    "Pow", "Square",  # LRN's formula and its gradient (its band product is a MatMul).
    "StatelessRandomUniformV2",  # The dropout masks.
)  # fmt: skip
# Layers whose every op, forward and backward, has its twin on the other device, except these
# op types: fc8's logits gathered on device 0 (the concat, and its gradient's slices), and the
# dropout seeds, drawn from the seed generator on device 0 (its state's reads and updates).
COLUMN_LAYERS = (
    "conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5",
    "fc6", "drop6", "fc7", "drop7", "fc8",
)  # fmt: skip
DEVICE_0_ONLY = {
    "fc8": {"ConcatV2", "IdentityN", "ConcatOffset", "FloorMod", "Slice"},
    "drop6": {"ReadVariableOp", "AssignVariableOp", "AddV2", "Mul"},
    "drop7": {"ReadVariableOp", "AssignVariableOp", "AddV2", "Mul"},
}
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


def _mirrored():
    # Not collective ops: their instance keys restart per strategy, and a later strategy in this
    # process (tests/test_train.py's) with other shapes would collide with them.
    return tf.distribute.MirroredStrategy(TOWERS, tf.distribute.ReductionToOneDevice())


def _device(variable):
    spec = tf.DeviceSpec.from_string(variable.value.device)
    return f"{spec.device_type}:{spec.device_index}"


def _fit_one_step(model, strategy, data):
    """One step of `fit` as the training run calls it, in the strategy's scope (the model must
    train under the strategy it was compiled for, whatever scope fit is called in)."""
    with strategy.scope():
        assert model.distribute_strategy is strategy
        model.fit(data, steps_per_epoch=1, verbose=0)


def _layer(op_name):
    found = re.search(r"/(input_scale|conv\d|lrn\d|pool\d|fc\d|drop\d)_?\d*/", op_name)
    return found.group(1) if found else op_name


@pytest.fixture(scope="module")
def towers_step(tmp_path_factory):
    """One towers training step of the real compiled model (dropout 0.5), traced on the executed
    graph. The strategy and devices are what --distribution=towers --devices=... makes."""
    strategy, devices = strategies.make_strategy("towers", TOWERS)
    assert devices == TOWERS
    model = trainer.compile_alexnet(_config(), CLASSES, strategy, devices)
    data = tf.data.Dataset.from_tensors(_batch()).repeat()
    placement = trace(
        lambda: _fit_one_step(model, strategy, data),
        dump_root=str(tmp_path_factory.mktemp("dump")),
    )
    return model, placement


@pytest.mark.slow
def test_every_heavy_op_family_runs_half_on_each_device(towers_step):
    _, placement = towers_step
    counts = placement.devices_by_type()
    for op_type, shares in placement.work_by_type(HEAVY).items():
        assert set(shares) == {"CPU:0", "CPU:1"}, op_type
        assert shares["CPU:0"] == pytest.approx(0.5, abs=0.02), (op_type, shares)
        assert counts[op_type]["CPU:0"] == counts[op_type]["CPU:1"], (op_type, counts[op_type])
    assert counts["Conv2DBackpropFilter"] == {"CPU:0": 5, "CPU:1": 5}
    assert counts["StatelessRandomUniformV2"] == {"CPU:0": 2, "CPU:1": 2}  # drop6's, drop7's.
    # conv3-conv5, fc6 and fc7, and conv1's and conv2's ReLU, which runs in lrn1 and lrn2 (the
    # reference LRN's relu=True): its gradient is a ReluGrad of its own now, in their scope.
    relu_grads = collections.Counter(
        (_layer(op.name), op.device) for op in placement.ops if op.type == "ReluGrad"
    )
    assert relu_grads == {
        (layer, device): 1
        for layer in ("lrn1", "lrn2", "conv3", "conv4", "conv5", "fc6", "fc7")
        for device in ("CPU:0", "CPU:1")
    }
    # conv2-conv5 need input gradients. TF's Conv2D gradient also builds conv1's, which feeds
    # nothing and is pruned at run time (only the debugger's instrumentation keeps it alive).
    consumed = {producer for producer, _, _ in placement.edges}
    live = collections.Counter(
        op.device
        for i, op in enumerate(placement.ops)
        if op.type == "Conv2DBackpropInput" and i in consumed
    )
    assert live == {"CPU:0": 4, "CPU:1": 4}


def test_every_column_op_has_its_twin_on_the_other_device(towers_step):
    """Each layer's ops, forward and backward (the bias gradients' Sum, LRN's arithmetic, the
    masks' selects...), run once per column, one column per device."""
    _, placement = towers_step
    counts = collections.defaultdict(collections.Counter)
    for op in placement.ops:
        layer = _layer(op.name)
        if layer in COLUMN_LAYERS and op.type not in DEVICE_0_ONLY.get(layer, ()):
            counts[layer, op.name.startswith("gradient_tape/"), op.type][op.device] += 1
    assert {layer for layer, _, _ in counts} == set(COLUMN_LAYERS)
    uneven = {key: dict(c) for key, c in counts.items() if c["CPU:0"] != c["CPU:1"]}
    assert uneven == {}
    bias_grads = sum(
        (c for (layer, backward, op_type), c in counts.items() if backward and op_type == "Sum"),
        collections.Counter(),
    )
    assert bias_grads == {"CPU:0": 8, "CPU:1": 8}  # conv1-conv5, fc6-fc8: `y + bias`'s Sum.


def test_updates_run_next_to_their_variables(towers_step):
    """Every variable update (the fused ResourceApplyKerasMomentum of a bias, the XLA update of a
    kernel) runs on its variable's device, next to its momentum; the weights split in halves."""
    model, placement = towers_step
    for variable in model.trainable_variables:
        column = variable.path.rsplit("_", 1)[-1]
        assert _device(variable) == f"CPU:{column}", variable.path
    for momentum in model.optimizer.momentums:
        assert _device(momentum) == f"CPU:{momentum.path.rsplit('_', 2)[-2]}", momentum.path

    def updates(kind):  # In creation order, which is the order of the variables.
        found = [
            op
            for op in placement.ops
            if op.type == kind and re.match(r"paper_sgd(_\d+)?/", op.name)
        ]
        return sorted(found, key=lambda op: int(re.search(r"(?:_(\d+))?$", op.name)[1] or 0))

    variables = model.trainable_variables
    kernels = [_device(v) for v in variables if optimizer.is_decayed(v)]
    biases = [_device(v) for v in variables if not optimizer.is_decayed(v)]
    assert [op.device for op in updates("ResourceApplyKerasMomentum")] == biases
    xla_updates = updates("StatefulPartitionedCall")  # Markers: these calls return nothing.
    assert [op.device for op in xla_updates] == kernels
    assert all(op.outputs == {} for op in xla_updates)
    assert len(kernels) == len(biases) == 16
    params = model.network.count_params()
    assert strategies.bytes_per_device(variables) == {
        "CPU:0": params * 2,  # Exactly half of the float32 weights each.
        "CPU:1": params * 2,
    }
    assert strategies.bytes_per_device(model.optimizer.momentums) == {
        "CPU:0": params * 2,
        "CPU:1": params * 2,
    }


def _exchanges(placement):
    """Bytes that crossed, by (kind, receiving device); fails on any crossing outside the paper's
    exchanges (Sec. 3.2: the columns meet at conv3's input and the fc layers; the images feed
    both)."""
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
    total = sum(sent.values())
    assert total <= placement.crossing_bytes() <= total + 8 * 64  # Plus a few scalars.
    return dict(sent)


def _expected_exchanges(activation_bytes, image_bytes):
    """At 67x67 pool2 is 3x3 and pool5 1x1; column 1's float32 logits go to device 0 and their
    gradient back."""
    exchange = BATCH * activation_bytes * (3 * 3 * 128 + 1 * 1 * 128 + 2048 + 2048)
    logits = BATCH * 4 * CLASSES // 2
    return {
        ("images", "CPU:1"): BATCH * SIZE * SIZE * 3 * image_bytes,
        ("forward", "CPU:0"): exchange + logits,
        ("forward", "CPU:1"): exchange,
        ("backward", "CPU:0"): exchange,
        ("backward", "CPU:1"): exchange + logits,
    }


def test_only_the_papers_exchanges_cross_devices(towers_step):
    _, placement = towers_step
    assert _exchanges(placement) == _expected_exchanges(4, 4)


@pytest.mark.slow
def test_towers_equal_one_device_logits_and_gradients():
    kwargs = dict(num_classes=CLASSES, input_shape=(SIZE, SIZE, 3), dropout=0.0, seed=5, **SMALL)
    one = build_alexnet(**kwargs)
    with towers.variables_on(TOWERS):
        network = build_alexnet(**kwargs)
    network.set_weights(one.get_weights())
    model = TrainingModel(network, towers=TOWERS)
    images, labels = _batch()

    @tf.function
    def loss_and_grads(model):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return logits, tape.gradient(loss, model.trainable_variables)

    logits_one, grads_one = loss_and_grads(one)
    logits_towers, grads_towers = loss_and_grads(model)
    # The same ops in another grouping: equal to float32 rounding (measured <= 1e-7 absolute).
    np.testing.assert_allclose(logits_towers.numpy(), logits_one.numpy(), rtol=1e-6, atol=1e-6)
    for variable, a, b in zip(one.trainable_variables, grads_one, grads_towers):
        np.testing.assert_allclose(
            b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=variable.path
        )
    assert {_device(v) for v in network.trainable_variables} == {"CPU:0", "CPU:1"}


def _final_state(model, strategy):
    """Every replica's copy of each weight and momentum after training."""
    variables = [*model.trainable_variables, *model.optimizer.momentums]
    return [
        [copy.numpy() for copy in strategy.experimental_local_results(v.value)] for v in variables
    ]


def _assert_replicas_match_one_device(states):
    assert all(len(copies) == 2 for copies in states["mirrored"])
    for (one,), mirrored in zip(states["one"], states["mirrored"]):
        for copy in mirrored:
            np.testing.assert_allclose(copy, one, rtol=1e-5, atol=1e-8)
    momentum = states["one"][len(states["one"]) // 2][0]
    assert np.abs(momentum).max() > 1e-5  # The step did move the weights.


@pytest.mark.slow
def test_mirrored_step_equals_one_device_step_on_the_global_batch():
    """Two replicas of 4 images each take the step one device takes on the 8 together: every
    replica's copy of the weights and of the momentum ends equal to the one-device values."""
    images, labels = _batch(8, seed=1)
    config = _config(distribution="one_device", devices=(), batch_size=8, dropout=0.0)
    states = {}
    for name, strategy in (
        ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
        ("mirrored", _mirrored()),
    ):
        keras.utils.set_random_seed(7)
        model = trainer.compile_alexnet(config, CLASSES, strategy)
        _fit_one_step(model, strategy, tf.data.Dataset.from_tensors((images, labels)))
        states[name] = _final_state(model, strategy)
    _assert_replicas_match_one_device(states)


def test_mirrored_replicas_draw_their_own_dropout_masks():
    """Issue 31: Keras's seed generator state is one value every replica reads, so both replicas
    dropped the same units. With equal images on both replicas, dropout 0.5 now gives different
    logits while training, and drop6 keeps different units on each."""
    strategy = _mirrored()
    config = _config(distribution="mirrored", batch_size=2 * BATCH, dropout=0.5)
    keras.utils.set_random_seed(3)
    model = trainer.compile_alexnet(config, CLASSES, strategy)
    images, _ = _batch()
    drop6 = model.network.get_layer("drop6")

    @tf.function
    def per_replica(training):
        logits = strategy.run(lambda x: model(x, training=training), args=(images,))
        kept = strategy.run(lambda: drop6(tf.ones([BATCH, 4096]), training=training) != 0)
        return logits, kept

    (test_logits, test_kept), (train_logits, train_kept) = per_replica(False), per_replica(True)
    test_logits = strategy.experimental_local_results(test_logits)
    np.testing.assert_allclose(test_logits[0], test_logits[1], rtol=1e-6, atol=1e-6)
    assert all(np.all(kept) for kept in strategy.experimental_local_results(test_kept))
    train_logits = strategy.experimental_local_results(train_logits)
    assert np.abs(train_logits[0].numpy() - train_logits[1].numpy()).max() > 1e-3
    kept = [k.numpy() for k in strategy.experimental_local_results(train_kept)]
    assert all(0.45 < k.mean() < 0.55 for k in kept)  # 16384 units each: rate 0.5.
    assert 0.45 < (kept[0] != kept[1]).mean() < 0.55  # Independent draws, not the same mask.


class _RecordingDropout:
    """A dropout layer whose `masked` (called by `per_replica_dropout` with the mask it drew)
    records the mask of each replica into `masks[layer name][replica]`."""

    def __init__(self, layer, masks):
        self._layer, self._masks = layer, masks

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def masked(self, x, keep):
        def record(replica, keep):
            self._masks[self._layer.name][int(replica)] = keep.copy()
            return keep

        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        recorded = tf.numpy_function(record, [replica, keep], tf.bool, stateful=True)
        return self._layer.masked(x, tf.ensure_shape(recorded, keep.shape))


@pytest.mark.slow
def test_mirrored_dropout_step_equals_one_device_step_with_the_same_masks():
    """Issue 31: with dropout 0.5 the two replicas' step is the one-device step on the global
    batch whose dropout drops, for each replica's examples, the units that replica dropped."""
    images, labels = _batch(8, seed=1)
    config = _config(distribution="one_device", devices=(), batch_size=8, dropout=0.5)
    data = tf.data.Dataset.from_tensors((images, labels))
    masks = collections.defaultdict(dict)
    drops = ("drop6", "drop7")

    strategy = _mirrored()
    keras.utils.set_random_seed(7)
    mirrored = trainer.compile_alexnet(config, CLASSES, strategy)
    for name in drops:
        mirrored.network.get_layer(name).fast_call = lambda layer, inputs, training=False: (
            per_replica_dropout(_RecordingDropout(layer, masks), inputs, training)
        )
    weights = mirrored.network.get_weights()
    _fit_one_step(mirrored, strategy, data)
    states = {"mirrored": _final_state(mirrored, strategy)}
    assert {name: sorted(masks[name]) for name in drops} == {name: [0, 1] for name in drops}
    for name in drops:
        assert masks[name][0].shape == masks[name][1].shape == (4, 4096)
        assert not np.array_equal(masks[name][0], masks[name][1]), name

    def replay(layer, inputs, training=False):  # The replicas' masks, in the batch's order.
        if not training or layer.rate == 0:
            return layer.at_test_time(inputs)
        return layer.masked(
            inputs, tf.constant(np.concatenate([masks[layer.name][r] for r in (0, 1)]))
        )

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    one = trainer.compile_alexnet(config, CLASSES, strategy)
    one.network.set_weights(weights)
    for name in drops:
        one.network.get_layer(name).fast_call = replay
    _fit_one_step(one, strategy, data)
    states["one"] = _final_state(one, strategy)
    _assert_replicas_match_one_device(states)


def test_towers_columns_draw_their_own_masks_on_their_devices_reproducibly(monkeypatch):
    """Each column of drop6 and drop7 draws its own mask, on its device; the same seed gives the
    same masks and logits, and the next call new masks."""

    def towers_run(seed):
        keras.utils.set_random_seed(seed)
        with towers.variables_on(TOWERS):
            network = build_alexnet(
                num_classes=CLASSES, input_shape=(SIZE, SIZE, 3), dropout=0.5, seed=5, **SMALL
            )
        model = TrainingModel(network, towers=TOWERS)
        masks = []
        for name in ("drop6", "drop7"):
            layer = network.get_layer(name)

            def masked(x, keep, layer=layer):
                masks.append((layer.name, keep.device, keep.numpy()))
                return type(layer).masked(layer, x, keep)

            monkeypatch.setattr(layer, "masked", masked)
        logits = [model(_batch()[0], training=True).numpy() for _ in range(2)]
        return logits, masks

    logits, masks = towers_run(11)
    assert [(name, device[-5:]) for name, device, _ in masks] == 2 * [
        ("drop6", "CPU:0"), ("drop6", "CPU:1"), ("drop7", "CPU:0"), ("drop7", "CPU:1"),
    ]  # fmt: skip
    for first in range(0, 8, 2):  # The two columns of a layer, in one call.
        (_, _, column_0), (_, _, column_1) = masks[first : first + 2]
        assert column_0.shape == column_1.shape == (BATCH, 2048)
        assert 0.45 < (column_0 != column_1).mean() < 0.55
    for a, b in zip(masks[:4], masks[4:]):  # The second call: new masks.
        assert 0.45 < (a[2] != b[2]).mean() < 0.55
    assert np.abs(logits[0] - logits[1]).max() > 1e-3
    again_logits, again_masks = towers_run(11)
    for a, b in zip(masks, again_masks):
        np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(np.stack(again_logits), np.stack(logits))


def test_towers_config_needs_two_devices():
    with pytest.raises(ValueError, match="exactly two devices for towers"):
        TrainConfig(distribution="towers", devices=("/cpu:0",))


@pytest.mark.parametrize(
    "devices,match",
    [
        (("/cpu:0", "/cpu:7"), "/cpu:7 does not exist.*--logical_devices=2"),
        (("/cpu:0",), "needs two devices; found /cpu:0\\. "),
        (("/cpu:0", "/cpu:1", "/cpu:1"), "needs two devices; found /cpu:0, /cpu:1, /cpu:1\\. "),
    ],
)
def test_towers_strategy_needs_two_existing_devices(devices, match):
    """`make_strategy` on its own (TrainConfig refuses some of these before it is reached)."""
    with pytest.raises(ValueError, match=match):
        strategies.make_strategy("towers", devices)


def test_towers_strategy_without_devices_needs_two_of_them(monkeypatch):
    strategy, devices = strategies.make_strategy("towers")  # conftest's two logical CPUs.
    assert strategy is tf.distribute.get_strategy()
    assert [tf.DeviceSpec.from_string(d).device_index for d in devices] == [0, 1]
    monkeypatch.setattr(strategies, "default_devices", lambda count=None: ("/cpu:0",))
    with pytest.raises(ValueError, match="needs two devices; found /cpu:0\\. "):
        strategies.make_strategy("towers")


@pytest.mark.slow
def test_mirrored_uint8_batches_are_finished_on_each_replicas_device(tmp_path):
    """--input_dtype=uint8: each replica's crops are cast and shifted on its own device (the
    executed graph says so), and no image crosses between the devices."""
    images, labels = _batch(8, seed=2)
    crops = np.clip(images + 128, 0, 255).astype(np.uint8)
    shifts = np.full((8, 3), -128, np.float32)
    strategy = _mirrored()
    config = _config(distribution="mirrored", batch_size=8)
    model = trainer.compile_alexnet(config, CLASSES, strategy, uint8_pixels=True)
    data = tf.data.Dataset.from_tensors(((crops, shifts), labels)).repeat()
    placement = trace(lambda: _fit_one_step(model, strategy, data), dump_root=str(tmp_path))
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


@pytest.fixture(scope="module")
def bfloat16_towers_step(tmp_path_factory):
    """A towers step under --mixed_precision=bfloat16 (what `auto` picks on bf16 CPUs and GPUs)."""
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        strategy, devices = strategies.make_strategy("towers", TOWERS)
        model = trainer.compile_alexnet(
            _config(mixed_precision="bfloat16"), CLASSES, strategy, devices
        )
        data = tf.data.Dataset.from_tensors(_batch()).repeat()
        placement = trace(
            lambda: _fit_one_step(model, strategy, data),
            dump_root=str(tmp_path_factory.mktemp("dump16")),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, placement


@pytest.mark.slow
def test_bfloat16_towers_exchange_only_the_papers_tensors(bfloat16_towers_step):
    """In mixed bfloat16 the same exchanges cross, and nothing else (no gradient gathered for a
    cast or a check)."""
    _, placement = bfloat16_towers_step
    assert _exchanges(placement) == _expected_exchanges(2, 2)


@pytest.mark.slow
def test_float16_towers_would_send_the_second_columns_gradients_across(tmp_path):
    """Why float16 towers are refused, on the executed graph of a step past the refusal: the loss
    scale's one finiteness check over every gradient sends column 1's gradients to device 0, on
    top of the paper's exchanges, every step."""
    config = _config()
    object.__setattr__(config, "mixed_precision", "float16")  # Past the refusal, to show why.
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        strategy, devices = strategies.make_strategy("towers", TOWERS)
        model = trainer.compile_alexnet(config, CLASSES, strategy, devices)
        placement = trace(
            lambda: _fit_one_step(model, strategy, tf.data.Dataset.from_tensors(_batch()).repeat()),
            dump_root=str(tmp_path / "dump"),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    papers = sum(_expected_exchanges(2, 4).values())  # float16 activations, float32 images.
    column_1 = sum(4 * int(np.prod(v.shape)) for v in model.trainable_variables
                   if _device(v) == "CPU:1")  # fmt: skip
    # Measured (Zen 3 EPYC): 81.1 MB crossed, the paper's exchanges 0.39 MB, column 1's
    # gradients 40.4 MB: gathered on device 0 and (nearly all) sent back.
    assert placement.crossing_bytes() >= papers + column_1


def test_float16_towers_are_refused_naming_the_flag():
    """float16's loss scaling checks every gradient in one conditional, which gathers column 1's
    gradients on device 0 and back every step (the test above): refused."""
    with pytest.raises(ValueError, match=r"--mixed_precision=float16 is invalid.*towers"):
        _config(mixed_precision="float16")
