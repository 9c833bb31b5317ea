"""executed_placement on toy graphs over the two logical CPUs: where ops really ran, what crossed.

Besides checking the helper, these tests record how TF places what the project cares about:
gradients of pinned forward ops, custom gradients, and a Keras train step with its optimizer.
"""

from __future__ import annotations

import re
from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf
from executed_placement import Placement, trace
from tensorflow.python.eager import context


def edges(placement: Placement) -> set[tuple[str, str, str, str, int]]:
    """The crossings as (producer type, its device, consumer type, its device, bytes)."""
    return {
        (c.producer.type, c.producer.device, c.consumer.type, c.consumer.device, c.nbytes)
        for c in placement.crossings()
    }


def partitioned_devices(function) -> dict[str, str]:
    """Node name -> device, from the partition graphs of one function TF executed."""
    return {
        node.name: node.device.split("device:")[-1]
        for graph in function.partition_graphs
        for node in graph.node
    }


def test_matmul_on_each_device_crosses_once(tmp_path):
    @tf.function
    def two_matmuls(x):
        with tf.device("/cpu:0"):
            a = tf.matmul(x, tf.ones([8, 8]))  # [4, 8] float32: 128 bytes
        with tf.device("/cpu:1"):
            return tf.matmul(a, tf.ones([8, 8]), name="second")

    placement = trace(two_matmuls, tf.ones([4, 8]), dump_root=str(tmp_path))

    assert placement.devices_by_type() == {"MatMul": Counter({"CPU:0": 1, "CPU:1": 1})}
    assert placement.work_by_type(["MatMul"]) == {"MatMul": {"CPU:0": 0.5, "CPU:1": 0.5}}
    [crossing] = placement.crossings()
    assert (crossing.producer.name, crossing.producer.device) == ("MatMul", "CPU:0")
    assert (crossing.consumer.name, crossing.consumer.device) == ("second", "CPU:1")
    assert crossing.nbytes == placement.crossing_bytes() == 128
    assert crossing.producer.outputs[0].shape == (4, 8)
    assert placement.unresolved == ["MatMul <- x:0"]  # The eager argument: device unknown.


def test_devices_are_where_tf_ran_the_ops_even_by_colocation(tmp_path):
    """Checked against the partition graphs TF executed: stock tfdbg would report the unpinned
    ReadVariableOp on CPU:0 (its debug op's device), and would not see the assignment at all."""
    with tf.device("/cpu:1"):
        weights = tf.Variable(tf.ones([8, 8]))

    @tf.function
    def read_and_update(x):
        weights.assign_add(tf.ones([8, 8]))
        return tf.matmul(x, weights)

    context.context().enable_run_metadata()
    try:
        placement = trace(read_and_update, tf.ones([4, 8]), dump_root=str(tmp_path))
        metadata = context.context().export_run_metadata()
    finally:
        context.context().disable_run_metadata()
    [ran_on] = [
        nodes
        for function in metadata.function_graphs
        if "MatMul/ReadVariableOp" in (nodes := partitioned_devices(function))
    ]

    devices = {op.type: op.device for op in placement.ops}
    assert devices == {"AssignAddVariableOp": "CPU:1", "ReadVariableOp": "CPU:1", "MatMul": "CPU:0"}
    assert all(ran_on[op.name] == op.device for op in placement.ops)
    assert [op.outputs for op in placement.ops if op.type == "AssignAddVariableOp"] == [{}]
    assert edges(placement) == {("ReadVariableOp", "CPU:1", "MatMul", "CPU:0", 256)}


def test_nested_function_boundaries_and_xla_calls(tmp_path):
    """An inner tf.function's unpinned ops run on its caller's device; the copies in and out of
    it are found through its arguments and return values. An XLA call is one record."""

    @tf.function
    def inner(a):
        return tf.matmul(a, a) * 2.0

    @tf.function(jit_compile=True)
    def compiled(a):
        return tf.nn.relu(a) + 1.0

    @tf.function
    def outer(x):
        with tf.device("/cpu:0"):
            a = tf.matmul(x, x)
        with tf.device("/cpu:1"):
            b = inner(a)
            c = compiled(b)
        return b + 1.0, c

    placement = trace(outer, tf.ones([8, 8]), dump_root=str(tmp_path))

    assert {(op.graph, op.type, op.device) for op in placement.ops} == {
        ("outer", "MatMul", "CPU:0"),
        ("inner", "MatMul", "CPU:1"),
        ("inner", "Mul", "CPU:1"),
        ("outer", "PartitionedCall", "CPU:1"),  # `compiled`: no Relu, AddV2 from its body
        ("outer", "AddV2", "CPU:0"),
    }
    assert edges(placement) == {
        ("MatMul", "CPU:0", "MatMul", "CPU:1", 256),  # into `inner` through its argument
        ("Mul", "CPU:1", "AddV2", "CPU:0", 256),  # out of `inner` through its return value
    }


def test_xla_calls_without_outputs_are_recorded(tmp_path):
    """An XLA call that returns nothing (a fused variable update, as PaperSGD's of each kernel)
    reaches no op callback: trace() records it where TF adds it, on its device, with what it
    reads from the other device. The caller's later ops are recorded too (while TF adds the call,
    the caller's graph is in an XLA context of the call's own), and a call inside a compiled
    function is part of that function's cluster, not a record."""
    with tf.device("/cpu:1"):
        weights = tf.Variable(tf.ones([8]))

    @tf.function(jit_compile=True)
    def update(variable, delta):
        variable.assign_add(2.0 * delta)

    @tf.function(jit_compile=True)
    def compiled(x):
        update(weights, x)
        return x + 1.0

    @tf.function
    def step(x):
        with tf.device("/cpu:0"):
            delta = x * 3.0
        with tf.device("/cpu:1"):
            update(weights, delta)
            y = compiled(x)
        with tf.device("/cpu:0"):
            return tf.reduce_sum(x) + y

    placement = trace(step, tf.ones([8]), dump_root=str(tmp_path))

    assert sorted((op.type, op.device, tuple(op.outputs)) for op in placement.ops) == [
        ("AddV2", "CPU:0", (0,)),
        ("Mul", "CPU:0", (0,)),
        ("StatefulPartitionedCall", "CPU:1", ()),  # `update`: a marker, no outputs
        ("StatefulPartitionedCall", "CPU:1", (0,)),  # `compiled`, with `update` inside
        ("Sum", "CPU:0", (0,)),
    ]
    assert edges(placement) == {
        ("Mul", "CPU:0", "StatefulPartitionedCall", "CPU:1", 32),  # delta, into `update`
        ("StatefulPartitionedCall", "CPU:1", "AddV2", "CPU:0", 32),  # `compiled`'s result
    }
    np.testing.assert_array_equal(weights.numpy(), np.full([8], 9.0))  # 1 + 2 * 3 + 2 * 1


def test_a_function_traced_before_must_be_retraced(tmp_path):
    @tf.function
    def double(x):
        return x * 2.0

    double(tf.ones([2]))
    with pytest.raises(RuntimeError, match="__inference_double"):
        trace(double, tf.ones([2]), dump_root=str(tmp_path / "before"))
    retraced = tf.function(double.python_function)
    assert len(trace(retraced, tf.ones([2]), dump_root=str(tmp_path / "after")).ops) == 1
    np.testing.assert_array_equal(retraced(tf.ones([2])), [2.0, 2.0])  # Instrumented, still runs.


@pytest.mark.parametrize("gradient_scope", [None, "/cpu:1"])
def test_gradients_of_pinned_forward_ops_run_where_tape_gradient_is_called(
    tmp_path, gradient_scope
):
    """The failure the project hit: `tf.device` pins the forward ops only. Their gradient ops
    follow the device scope around `tape.gradient` (none: device 0), not the forward op."""
    with tf.device("/cpu:1"):
        weights = tf.Variable(tf.ones([8, 8]))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            with tf.device("/cpu:1"):
                loss = tf.reduce_sum(tf.nn.relu(tf.matmul(x, weights)))
        with tf.device(gradient_scope):
            return tape.gradient(loss, weights)

    placement = trace(step, tf.ones([4, 8]), dump_root=str(tmp_path))

    backward = "CPU:1" if gradient_scope else "CPU:0"
    devices = {op.name: op.device for op in placement.ops}
    assert devices == {
        "MatMul/ReadVariableOp": "CPU:1",
        "MatMul": "CPU:1",
        "Relu": "CPU:1",
        "Sum": "CPU:1",
        "gradient_tape/Reshape": backward,
        "gradient_tape/Tile": backward,
        "gradient_tape/ReluGrad": backward,
        "gradient_tape/MatMul/MatMul": backward,
    }
    crossed = {("Relu", "CPU:1", "ReluGrad", "CPU:0", 128)}  # Relu's output, for ReluGrad
    assert edges(placement) == (set() if gradient_scope else crossed)


def test_custom_gradient_pinned_inside_its_backward_runs_there(tmp_path):
    @tf.custom_gradient
    def triple(x):
        def backward(upstream):
            with tf.device("/cpu:1"):
                return tf.multiply(upstream, 3.0, name="triple_grad")

        return x * 3.0, backward

    @tf.function
    def step(x):
        with tf.device("/cpu:0"):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(triple(x)))
            return tf.reduce_sum(tape.gradient(loss, x))

    placement = trace(step, tf.ones([4, 8]), dump_root=str(tmp_path))

    [grad] = [op for op in placement.ops if op.name == "triple_grad"]
    assert grad.device == "CPU:1"
    assert {op.device for op in placement.ops if op is not grad} == {"CPU:0"}
    assert edges(placement) == {
        ("Mul", "CPU:0", "Mul", "CPU:1", 128),  # The upstream gradient, to triple_grad.
        ("Mul", "CPU:1", "Sum", "CPU:0", 128),  # triple_grad's result, back.
    }


class TwoTowers(keras.Model):
    """Two Dense columns, variables and forward ops on device i, like the paper's towers."""

    def __init__(self):
        super().__init__()
        self.towers = [keras.layers.Dense(8, name=f"tower{i}") for i in range(2)]
        self.head = keras.layers.Dense(2, name="head")

    def build(self, input_shape):
        for i, tower in enumerate(self.towers):
            with tf.device(f"/cpu:{i}"):
                tower.build(input_shape)
        self.head.build((None, 16))

    def call(self, x):
        outputs = []
        for i, tower in enumerate(self.towers):
            with tf.device(f"/cpu:{i}"):
                outputs.append(tower(x))
        return self.head(tf.concat(outputs, axis=-1))


def test_keras_train_step_towers_forward_backward_and_optimizer(tmp_path):
    """How to trace a Keras step: call fit() for the first time inside trace(). (To trace an
    already-trained model, `model.make_train_function(force=True)` first.) jit_compile=False:
    with XLA the whole step is one record, the StatefulPartitionedCall of the cluster."""
    model = TwoTowers()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=False)
    x, y = np.ones([4, 6], np.float32), np.zeros([4, 2], np.float32)

    def one_step():
        model.fit(x, y, batch_size=4, steps_per_epoch=1, shuffle=False, verbose=0)

    placement = trace(one_step, dump_root=str(tmp_path))

    matmuls = Counter(
        (op.name.startswith("gradient_tape/"), re.search(r"tower\d|head", op.name)[0], op.device)
        for op in placement.ops
        if op.type == "MatMul"
    )
    assert matmuls == {  # (backward?, layer, device): count
        (False, "tower0", "CPU:0"): 1,
        (False, "tower1", "CPU:1"): 1,
        (False, "head", "CPU:0"): 1,
        (True, "tower0", "CPU:0"): 1,
        (True, "tower1", "CPU:0"): 1,  # Tower 1's weight gradient: on device 0.
        (True, "head", "CPU:0"): 2,
    }
    assert {op.device for op in placement.ops if op.name.startswith("gradient_tape/")} == {"CPU:0"}
    # SGD computes every update on device 0; the assignments run next to the variables.
    # "sgd_3/" when other tests of the process made optimizers first (found in random order).
    sgd = [op for op in placement.ops if re.match(r"sgd(_\d+)?/", op.name)]
    assert Counter(op.device for op in sgd if op.type == "Mul") == {"CPU:0": 6}
    assert Counter(op.device for op in sgd if op.type == "AssignSubVariableOp") == {
        "CPU:0": 4,
        "CPU:1": 2,
    }
    assert edges(placement) == {
        ("IteratorGetNext", "CPU:0", "MatMul", "CPU:1", 96),  # The batch, into tower 1.
        ("BiasAdd", "CPU:1", "ConcatV2", "CPU:0", 128),  # Tower 1's activations, back.
        ("Mul", "CPU:0", "AssignSubVariableOp", "CPU:1", 192),  # Tower 1's kernel update.
        ("Mul", "CPU:0", "AssignSubVariableOp", "CPU:1", 32),  # Its bias update.
    }
    assert placement.crossing_bytes() == 96 + 128 + 192 + 32
