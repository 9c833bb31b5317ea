"""Where graph ops really executed, and which tensors crossed devices, read from tfdbg v2 dumps.

`trace(fn, *args, dump_root=...)` runs `fn` once under `tf.debugging.experimental` dumping in
SHAPE mode and returns a `Placement`: one `OpRecord` per executed graph op (device, outputs'
dtype/shape/bytes) and the data edges between them, so tests can check a model-parallel split
forward *and* backward and count the bytes sent between devices. Eager ops are not recorded.

What tfdbg records, and what this module changes about it:

* Ops are instrumented when they are *created* (an op callback adds DebugNumericSummaryV2 ->
  DebugIdentityV2 per output; the latter writes its own device). A `tf.function` traced before
  the dump is on runs uninstrumented, so `fn` must trace inside `trace()` (first call, a new
  `tf.function`, `model.make_train_function(force=True)`): `trace()` raises if a top-level
  function ran uninstrumented. Functions traced inside keep their debug ops and keep writing to
  that dump root (cheaply) when run again; they are not recorded by a later `trace()`. (So
  `trace()` never calls disable_dump_debug_info(): once it closed the writer, running such a
  function segfaults, TF 2.21.) The op callback is thread-local, like the dump.
* Stock tfdbg places its debug ops on their own, so an op placed by colocation was misreported
  (ReadVariableOp of a variable on CPU:1, even inside tf.device("/cpu:1"): CPU:0) and got an
  extra copy. Here debug ops are colocated with their op (not tried on GPUs, where the debug
  kernels may lack some dtypes).
* Ops without outputs (AssignSubVariableOp, ResourceApply*: optimizer updates) are invisible to
  tfdbg; here a colocated marker records them, with no outputs.
* Const and Placeholder ops are not instrumented (a debug consumer would defeat the placer's
  "a constant goes with its only consumer" rule; function arguments run as _Arg, never traced).
  tfdbg itself skips Identity, NoOp, If, While and function call ops.
* `tf.function(jit_compile=True)` bodies (and their backward functions) run as XLA clusters,
  where tfdbg's ops cannot compile: they are not instrumented, but each used output of the call
  op is, so the call is one record (PartitionedCall or StatefulPartitionedCall) on its device.
  A call that returns nothing (an XLA update of variables, e.g. PaperSGD's fused kernel update)
  reaches no op callback at all: `trace()` catches it where TF creates call ops, and a colocated
  marker records it, with no outputs.
* Other nested functions (backward functions, Keras' one_step_on_data) are inlined before
  placement and recorded in their own graph. tfdbg does not see _Send/_Recv (added after
  placement), so crossings are inferred: each input of a record is followed back through
  Identity ops, function arguments (to the caller's input) and call outputs (to the callee's
  return value) to the record that computed it. Inputs that cannot be followed (top-level
  arguments, If/While boundaries, untraced producers) are listed in `Placement.unresolved`.
  Constants and resource/variant tensors are skipped: no data to count.
* A loop body op is one record however often it ran. An op is recorded per device it ran on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator

import tensorflow as tf
from tensorflow.python.debug.lib import debug_events_reader, dumping_callback
from tensorflow.python.eager import context
from tensorflow.python.eager import function as function_lib
from tensorflow.python.eager.polymorphic_function import atomic_function
from tensorflow.python.framework import op_callbacks
from tensorflow.python.ops import control_flow_util, gen_debug_ops

_CALLS = ("PartitionedCall", "StatefulPartitionedCall")


@dataclasses.dataclass(frozen=True)
class Output:
    """One output tensor of an executed op, as recorded by tfdbg's SHAPE mode."""

    dtype: str
    shape: tuple[int, ...]  # tfdbg records at most 6 dimensions
    nbytes: int


@dataclasses.dataclass(frozen=True)
class OpRecord:
    """An op that executed: where, in which graph, and its outputs by output slot."""

    name: str
    type: str
    graph_id: str
    graph: str
    device: str  # e.g. "CPU:1"
    outputs: dict[int, Output]


@dataclasses.dataclass(frozen=True)
class Crossing:
    """Output `slot` of `producer`, consumed by `consumer` on another device."""

    producer: OpRecord
    slot: int
    consumer: OpRecord
    nbytes: int  # 0 if the output's size was not recorded


@dataclasses.dataclass
class Placement:
    """The executed ops of one `trace()` and the data edges between them."""

    ops: list[OpRecord]
    edges: list[tuple[int, int, int]]  # (producer index in ops, its output slot, consumer index)
    unresolved: list[str]  # "consumer <- tensor": inputs whose producer could not be followed

    def devices_by_type(self) -> dict[str, Counter]:
        """For each op type, how many ops of that type executed on each device."""
        result: dict[str, Counter] = defaultdict(Counter)
        for op in self.ops:
            result[op.type][op.device] += 1
        return dict(result)

    def work_by_type(self, op_types: Iterable[str]) -> dict[str, dict[str, float]]:
        """For each op type, each device's share of its output bytes (a proxy for work)."""
        result = {}
        for op_type in op_types:
            per_device: Counter = Counter()
            for op in self.ops:
                if op.type == op_type:
                    per_device[op.device] += sum(o.nbytes for o in op.outputs.values())
            total = sum(per_device.values()) or 1
            result[op_type] = {device: n / total for device, n in per_device.items()}
        return result

    def crossings(self) -> list[Crossing]:
        """Every (producer output, consumer) edge whose two ops ran on different devices."""
        result = []
        for p, slot, c in self.edges:
            producer, consumer = self.ops[p], self.ops[c]
            if producer.device != consumer.device:
                output = producer.outputs.get(slot)
                result.append(Crossing(producer, slot, consumer, output.nbytes if output else 0))
        return result

    def crossing_bytes(self) -> int:
        """Bytes sent between devices; like TF, a tensor is sent once per receiving device."""
        sent = {(id(c.producer), c.slot, c.consumer.device): c.nbytes for c in self.crossings()}
        return sum(sent.values())


def trace(fn: Callable[..., object], *args: object, dump_root: str) -> Placement:
    """Runs `fn(*args)` once under tfdbg (SHAPE mode, soft placement off) and reads the dump.

    `dump_root` must be a new directory per call. Raises RuntimeError if another tfdbg dump is
    enabled, or if a top-level `tf.function` ran that was traced before this call.
    """
    if hasattr(dumping_callback._state, "dumping_callback"):
        raise RuntimeError("a tfdbg dump is already enabled in this thread")
    soft = tf.config.get_soft_device_placement()
    tf.config.set_soft_device_placement(False)
    writer = tf.debugging.experimental.enable_dump_debug_info(
        dump_root, tensor_debug_mode="SHAPE", circular_buffer_size=-1
    )
    dumper = dumping_callback._state.dumping_callback
    hook = _colocating_hook(dumper)
    op_callbacks.remove_op_callback(dumper.callback)
    op_callbacks.add_op_callback(hook)
    make_call = atomic_function.partitioned_call_op

    def call_op(*call_args: object, **call_kwargs: object) -> tf.Operation:
        op = make_call(*call_args, **call_kwargs)
        hook.record_call(op)
        return op

    atomic_function.partitioned_call_op = call_op  # Graph call ops reach no op callback.
    try:
        fn(*args)
    finally:
        atomic_function.partitioned_call_op = make_call
        # disable_dump_debug_info() would Close() the writer, after which running any function
        # instrumented here segfaults the process (TF 2.21): flush and unregister instead.
        writer.FlushNonExecutionFiles()
        writer.FlushExecutionFiles()
        op_callbacks.remove_op_callback(hook)
        function_lib.CONCRETE_FUNCTION_CALLBACKS.remove(dumper.function_callback)
        del dumping_callback._state.dumping_callback
        tf.config.set_soft_device_placement(soft)
    with debug_events_reader.DebugDataReader(dump_root) as reader:
        reader.update()
        stale = [
            e.op_type
            for e in reader.executions()
            if dumping_callback.is_op_type_function(e.op_type) and not e.graph_id
        ]
        if stale:
            raise RuntimeError(f"{stale} ran uninstrumented: trace them inside trace()")
        graphs = {graph_id: graph for graph, graph_id in dumper._context_to_id.items()}
        return _placement(reader.graph_execution_traces(), graphs)


def _colocating_hook(dumper: dumping_callback._DumpingCallback) -> Callable[..., object]:
    """Wraps tfdbg's op callback: colocated debug ops, markers, XLA calls (see module doc)."""
    original = dumper.callback
    digested: set[tf.Operation] = set()
    visited: set[object] = set()  # refs of call outputs already looked at
    xla_graphs: set[str] = set()  # names of graphs XLA compiles: nothing is instrumented there

    def in_xla(graph: tf.Graph) -> bool:
        name = getattr(graph, "name", "")
        backward_of = re.fullmatch(r"__backward_(.+)_\d+", name)  # compiled like its forward
        if control_flow_util.GraphOrParentsInXlaContext(graph) or (
            backward_of and backward_of[1] in xla_graphs
        ):
            xla_graphs.add(name)
        return name in xla_graphs

    @contextlib.contextmanager
    def next_to(graph: tf.Graph, op: tf.Operation) -> Iterator[None]:
        with graph.colocate_with(op, ignore_existing=True), graph.device(op.device):
            yield

    def watch(graph: tf.Graph, op: tf.Operation, slot: int, tensor: tf.Tensor) -> None:
        """Adds tfdbg's SHAPE-mode debug ops on `tensor`, recorded as output `slot` of `op`."""
        with next_to(graph, op):
            summary = gen_debug_ops.debug_numeric_summary_v2(
                tensor,
                tensor_id=dumper._get_symbolic_tensor_ids(1)[0],
                tensor_debug_mode=dumper.tensor_debug_mode,
                output_dtype=tf.float64,
            )
            gen_debug_ops.debug_identity_v2(
                summary,
                tfdbg_context_id=dumper._get_context_id(graph),
                op_name=op.name,
                output_slot=slot,
                tensor_debug_mode=dumper.tensor_debug_mode,
                debug_urls=[f"file://{dumper.dump_root}"],
                circular_buffer_size=dumper.circular_buffer_size,
                tfdbg_run_id=dumper.tfdbg_run_id,
            )

    def watch_calls(graph: tf.Graph, tensors: Iterable[tf.Tensor]) -> None:
        """Instruments the XLA call outputs among (and feeding) `tensors`."""
        for tensor in tensors:
            call = tensor.op
            if call.type not in _CALLS or tensor.ref() in visited:
                continue
            visited.add(tensor.ref())
            if _is_xla_call(call) and _dumpable(tensor.dtype):
                if call not in digested:  # no callback sees call ops: write their digest
                    digested.add(call)
                    original(call.type, tuple(call.inputs), (), (), call.name, graph)
                watch(graph, call, tensor.value_index, tensor)
            watch_calls(graph, call.inputs)  # e.g. a backward XLA call fed by a forward one

    def hook(
        op_type: str,
        inputs: tuple[tf.Tensor, ...],
        attrs: tuple[object, ...],
        outputs: tuple[tf.Tensor, ...],
        op_name: str | None = None,
        graph: tf.Graph | None = None,
    ) -> object:
        """tfdbg's callback, with the changes above; called for every op created or run."""
        if graph is None:  # an op or function executed eagerly
            return original(op_type, inputs, attrs, outputs, op_name=op_name, graph=graph)
        if op_type in ("Const", "Placeholder") or in_xla(graph):
            return None
        watch_calls(graph, inputs)
        op = outputs[0].op if outputs else graph.get_operation_by_name(op_name)
        with next_to(graph, op):
            result = original(op_type, inputs, attrs, outputs, op_name=op_name, graph=graph)
        if not outputs and op_type != "NoOp":
            mark(graph, op)
        return result

    def mark(graph: tf.Graph, op: tf.Operation) -> None:
        """Records `op`, which has no outputs, by a marker that runs after it, next to it."""
        with next_to(graph, op), graph.control_dependencies([op]):
            watch(graph, op, 0, tf.zeros([0]))

    def record_call(call: tf.Operation) -> None:
        """Records an XLA call without outputs (when this thread's dump is on): no callback
        sees call ops, and `watch_calls` finds calls only through their outputs.

        While TF adds the call, the caller's graph is in an XLA context of the call's own (that
        is how the callee's graph knows it is compiled): whether the caller is compiled is
        known from its outer graphs, or from its own ops seen before.
        """
        ctx, graph = context.context(), call.graph
        if hook not in ctx.op_callbacks or ctx.invoking_op_callbacks:
            return
        outer = getattr(graph, "outer_graph", None)
        if graph.name in xla_graphs or (
            outer is not None and control_flow_util.GraphOrParentsInXlaContext(outer)
        ):
            return
        if _is_xla_call(call) and not call.outputs:
            ctx.invoking_op_callbacks = True  # As in a callback: its own ops are not traced.
            try:
                original(call.type, tuple(call.inputs), (), (), call.name, graph)  # Its digest.
                mark(graph, call)
            finally:
                ctx.invoking_op_callbacks = False

    hook.record_call = record_call
    return hook


def _dumpable(dtype: tf.DType) -> bool:
    """Whether SHAPE mode records `dtype` (resource, variant and string tensors: no)."""
    return dtype.is_floating or dtype.is_integer or dtype.is_bool


def _is_xla_call(op: tf.Operation) -> bool:
    """Whether `op` calls a `tf.function(jit_compile=True)`: XLA runs it as one cluster."""
    return op.type in _CALLS and op.node_def.attr["_XlaMustCompile"].b


def _placement(
    traces: list[debug_events_reader.GraphExecutionTrace], graphs: dict[str, tf.Graph]
) -> Placement:
    """Builds the records from the traces, then resolves each record's inputs to a record."""
    ids = {graph: graph_id for graph_id, graph in graphs.items()}

    def callee(graph_id: str, call: tf.Operation) -> tf.Graph | None:
        """The traced FuncGraph that a non-XLA call op runs, if any."""
        if call.type not in _CALLS or _is_xla_call(call):
            return None
        function = graphs[graph_id]._get_function(call.get_attr("f").name)
        graph = getattr(function, "graph", None)
        return graph if graph in ids else None

    callers: dict[tuple[str, str], tuple[str, tf.Tensor]] = {}  # (callee, argument) -> input
    for graph_id, graph in graphs.items():
        for call in graph.get_operations():
            inner = callee(graph_id, call)
            if inner is not None and len(inner.inputs) == len(call.inputs):
                for argument, value in zip(inner.inputs, call.inputs):  # first call site wins
                    callers.setdefault((ids[inner], argument.op.name), (graph_id, value))

    def follow(graph_id: str, tensor: tf.Tensor) -> tuple[str, tf.Tensor]:
        """Follows `tensor` back through Identity ops and function boundaries."""
        while True:
            op, inner = tensor.op, callee(graph_id, tensor.op)
            if op.type == "Identity":
                tensor = op.inputs[0]
            elif op.type == "Placeholder" and (graph_id, op.name) in callers:
                graph_id, tensor = callers[(graph_id, op.name)]
            elif inner is not None:
                graph_id, tensor = ids[inner], inner.outputs[tensor.value_index]
            else:
                return graph_id, tensor

    outputs: dict[tuple[str, str, str], dict[int, Output]] = {}
    for t in traces:
        spec = tf.DeviceSpec.from_string(t.device_name)
        key = (t.graph_id, t.op_name, f"{spec.device_type}:{spec.device_index}")
        slots = outputs.setdefault(key, {})
        if graphs[t.graph_id].get_operation_by_name(t.op_name).outputs:  # else: a marker
            _, dtype, rank, size, *dims = t.debug_tensor_value
            dtype = tf.as_dtype(int(dtype))
            shape = tuple(int(d) for d in dims[: int(rank)])
            slots[t.output_slot] = Output(dtype.name, shape, int(size) * dtype.size)
    ops = [
        OpRecord(name, graphs[g].get_operation_by_name(name).type, g, graphs[g].name, device, slots)
        for (g, name, device), slots in outputs.items()
    ]
    by_op: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, op in enumerate(ops):
        by_op[(op.graph_id, op.name)].append(i)

    edges: dict[tuple[int, int, int], None] = {}  # an ordered set
    unresolved: dict[str, None] = {}
    for c, consumer in enumerate(ops):
        for tensor in graphs[consumer.graph_id].get_operation_by_name(consumer.name).inputs:
            if not _dumpable(tensor.dtype):
                continue
            graph_id, source = follow(consumer.graph_id, tensor)
            producers = by_op.get((graph_id, source.op.name), [])
            if producers:  # if it ran on several devices, prefer the consumer's
                same = [p for p in producers if ops[p].device == consumer.device]
                edges[((same or producers)[0], source.value_index, c)] = None
            elif source.op.type != "Const":
                unresolved[f"{consumer.name} <- {source.name}"] = None
    return Placement(ops, list(edges), list(unresolved))
