"""What a stock TF Serving needs of a SavedModel, read from the saved_model.pb it loads.

`tensorflow_model_server` starts with XLA's CPU JIT off (`DisableXlaCompilation()` in its
main.cc) and answers a model with must-compile functions with a bad Status on the first request;
the Python session loader the other tests use has XLA linked and never sees it. So every graph
and every function in the library is walked for `_XlaMustCompile`, the file is scanned as
`saved_model_cli scan` scans it, and each signature is checked as the server's Predict API does.
"""

from __future__ import annotations

import contextlib
import io
import os

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model import signature_def_utils_impl
from tensorflow.python.tools import saved_model_cli


def read(path: str) -> saved_model_pb2.SavedModel:
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model


def _graphs(saved_model: saved_model_pb2.SavedModel):
    """(where, node_defs) for each meta graph's graph and each function of its library."""
    for meta in saved_model.meta_graphs:
        yield "graph", meta.graph_def.node
        for function in meta.graph_def.library.function:
            yield function.signature.name, function.node_def


def must_compile(path: str) -> list[str]:
    """Functions and nodes that carry `_XlaMustCompile=true`."""
    saved_model, found = read(path), []
    for meta in saved_model.meta_graphs:
        for function in meta.graph_def.library.function:
            if function.attr["_XlaMustCompile"].b:
                found.append(function.signature.name)
    for where, nodes in _graphs(saved_model):
        found += [f"{where}/{node.name}" for node in nodes if node.attr["_XlaMustCompile"].b]
    return found


def op_types(path: str) -> set[str]:
    """Every op type in the graph and in every function."""
    return {node.op for _, nodes in _graphs(read(path)) for node in nodes}


def denylisted(path: str) -> str | None:
    """What `saved_model_cli scan` reports when a meta graph holds a denylisted op, else None."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        for meta in read(path).meta_graphs:
            saved_model_cli.scan_meta_graph_def(meta, saved_model_cli._OP_DENYLIST)
    text = output.getvalue()
    return text if "contains the following denylisted ops" in text else None


def invalid_signatures(path: str) -> list[str]:
    """Signatures TF's `is_valid_signature` rejects (not the SavedModel's own init op entry)."""
    return [
        name
        for meta in read(path).meta_graphs
        for name, signature in meta.signature_def.items()
        if name != "__saved_model_init_op"  # tf.compat.v1.saved_model.INIT_OP_SIGNATURE_KEY
        and not signature_def_utils_impl.is_valid_signature(signature)
    ]


def assert_servable(path: str) -> None:
    """Loads on a stock TF Serving: no JIT, no denylisted op, valid signatures."""
    assert must_compile(path) == [], must_compile(path)
    assert denylisted(path) is None, denylisted(path)
    assert invalid_signatures(path) == []
    assert "XlaLaunch" not in op_types(path)
