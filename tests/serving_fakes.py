"""Stand-ins for TF Serving (whose binary is not installable here) that answer from a real export.

They speak TF Serving's documented protocols: the REST API's URLs, JSON bodies and error bodies
({"error": "..."} with 404 for unknown models/versions, 400 for bad input), and gRPC's
PredictionService/ModelService with NOT_FOUND / INVALID_ARGUMENT statuses.
"""

import base64
import contextlib
import json
import re
import socket
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

_URL = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict|/metadata)?$")


class Servable:
    """One exported version, run in-process."""

    def __init__(self, path, name="alexnet", version=1):
        self.name, self.version = name, version
        self.signatures = tf.saved_model.load(path).signatures

    def not_found(self, name, version):
        if name != self.name:
            return f"Could not find any versions of model {name}"
        if version is not None and int(version) != self.version:
            return f"Servable not found for request: Specific({name}, {version})"
        return None

    def run(self, signature, inputs):
        outputs = self.signatures[signature or "serving_default"](**inputs)
        return {name: value.numpy() for name, value in outputs.items()}


class FakeRestServer:
    def __init__(self, servable):
        servable_ = servable

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                match = _URL.match(self.path)
                if not match:
                    self._send(404, {"error": f"Malformed request: {self.command} {self.path}"})
                    return None
                name, version, verb = match.groups()
                error = servable_.not_found(name, version)
                if error:
                    self._send(404, {"error": error})
                    return None
                return verb or "status"

            def do_GET(self):
                verb = self._route()
                if verb is None:
                    return
                if verb == "/metadata":
                    spec = {"name": servable_.name, "version": str(servable_.version)}
                    sigs = {name: {} for name in servable_.signatures}
                    self._send(200, {"model_spec": spec, "metadata": {"signature_def": sigs}})
                else:
                    status = {"version": str(servable_.version), "state": "AVAILABLE",
                              "status": {"error_code": "OK", "error_message": ""}}  # fmt: skip
                    self._send(200, {"model_version_status": [status]})

            def do_POST(self):
                if self._route() != ":predict":
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                images = [base64.b64decode(row["b64"]) for row in body["instances"]]
                try:
                    out = servable_.run(body.get("signature_name"), {"image_bytes": images})
                except tf.errors.InvalidArgumentError as error:
                    self._send(400, {"error": error.message})
                    return
                rows = [
                    {k: (v[i].astype(str) if v.dtype == object else v[i]).tolist()
                     for k, v in out.items()}
                    for i in range(len(images))
                ]  # fmt: skip
                self._send(200, {"predictions": rows})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *args):
        self.server.shutdown()
        self.server.server_close()


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, servable):
        self.servable = servable

    def Predict(self, request, context):
        spec = request.model_spec
        error = self.servable.not_found(spec.name, spec.version.value or None)
        if error:
            context.abort(grpc.StatusCode.NOT_FOUND, error)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = self.servable.run(spec.signature_name, inputs)
        except tf.errors.InvalidArgumentError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


class _Models(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, servable):
        self.servable = servable

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        error = self.servable.not_found(spec.name, spec.version.value or None)
        if error:
            context.abort(grpc.StatusCode.NOT_FOUND, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.servable.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


class FakeGrpcServer:
    def __init__(self, servable):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _Prediction(servable), self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_Models(servable), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *args):
        self.server.stop(None)


@contextlib.contextmanager
def refusing_address():
    """A loopback address that refuses connections for as long as the context lasts: its port is
    bound (so no other process can take it meanwhile) and never listened on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


def free_ports(count):
    """`count` ports nothing listens on, for a server to bind: bound and released, so another
    process may take one first (a server started on them must retry with new ones)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
