"""A TF Serving client for the exported AlexNet: REST and gRPC requests, responses, clear errors.

REST (TF Serving's documented JSON API, port 8501):
    POST /v1/models/NAME[/versions/N]:predict  {"instances": [{"b64": "..."}, ...]}
    GET  /v1/models/NAME[/versions/N]          model status
    GET  /v1/models/NAME[/versions/N]/metadata signature metadata
gRPC (port 8500): PredictionService.Predict / GetModelMetadata and ModelService.GetModelStatus,
with tensorflow-serving-api's protos (the `serving` extra; imported only for gRPC).

The REST path needs only the standard library. Used by `tools/serving_client.py` and, for the
output format, by `alexnet_keras.predict`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

SERVING_DEFAULT = "serving_default"  # Same as alexnet_keras.serving; kept here to stay TF-free.


class ServingError(RuntimeError):
    """A request to TF Serving failed; the message says why and what to check."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, best first."""

    labels: tuple[str, ...]
    scores: tuple[float, ...]
    ids: tuple[int, ...]


def _prediction(outputs: Mapping) -> Prediction:
    labels = [
        v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in outputs["top_k_labels"]
    ]
    return Prediction(
        tuple(labels),
        tuple(float(v) for v in outputs["top_k_scores"]),
        tuple(int(v) for v in outputs["top_k_ids"]),
    )


def format_predictions(names: Sequence[str], predictions: Sequence[Prediction]) -> str:
    """Human-readable top-k lists, one block per input name."""
    lines = []
    for name, prediction in zip(names, predictions):
        lines.append(name)
        for rank, (label, score, index) in enumerate(
            zip(prediction.labels, prediction.scores, prediction.ids), start=1
        ):
            lines.append(f"  {rank}. {score:.4f}  {label} (class {index})")
    return "\n".join(lines)


# ---------------------------------------------------------------- REST


def rest_url(server: str, model_name: str, version: int | None = None, suffix: str = "") -> str:
    """`http://server/v1/models/NAME[/versions/N]` + suffix (":predict", "/metadata" or "")."""
    base = server if server.startswith(("http://", "https://")) else f"http://{server}"
    path = f"{base.rstrip('/')}/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{version}"
    return path + suffix


def rest_predict_body(images: Sequence[bytes], signature_name: str | None = None) -> dict:
    """The JSON body of a REST predict request (row format; binary values as {"b64": ...})."""
    if not images:
        raise ValueError("No images to send: pass at least one image.")
    body = {"instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images]}
    if signature_name and signature_name != SERVING_DEFAULT:
        body["signature_name"] = signature_name
    return body


def parse_rest_predictions(body: Mapping) -> list[Prediction]:
    """Predictions from a REST predict response, row ("predictions") or columnar ("outputs")."""
    if "error" in body:
        raise ServingError(f"TF Serving returned an error: {body['error']}")
    if "predictions" in body:
        return [_prediction(row) for row in body["predictions"]]
    if "outputs" in body:
        outputs = body["outputs"]
        count = len(outputs["top_k_ids"])
        return [_prediction({k: v[i] for k, v in outputs.items()}) for i in range(count)]
    raise ServingError(f"Unexpected TF Serving response (no predictions): {str(body)[:200]}")


def _what(model_name: str, version: int | None) -> str:
    return f"model {model_name!r}" + ("" if version is None else f" version {version}")


def http_json(
    url: str, body: Mapping | None = None, timeout: float = 30.0, what: str = "the model"
) -> dict:
    """GET (or POST `body` as JSON to) `url`; TF Serving's error messages become ServingError."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", text)
        except json.JSONDecodeError:
            message = text
        if error.code == 404:
            raise ServingError(f"TF Serving does not serve {what} ({url}): {message}") from error
        raise ServingError(f"TF Serving returned HTTP {error.code} for {url}: {message}") from error
    except urllib.error.URLError as error:
        raise ServingError(
            f"Cannot connect to TF Serving's REST API at {url} ({error.reason}). Is "
            "tensorflow_model_server running there with --rest_api_port set to this port?"
        ) from error
    except (ConnectionError, TimeoutError) as error:
        raise ServingError(f"Connection to {url} failed: {error}") from error


def rest_predict(
    server: str,
    model_name: str,
    images: Sequence[bytes],
    version: int | None = None,
    signature_name: str | None = None,
    timeout: float = 30.0,
) -> list[Prediction]:
    """Top-k predictions for encoded images through TF Serving's REST predict API."""
    url = rest_url(server, model_name, version, ":predict")
    body = rest_predict_body(images, signature_name)
    return parse_rest_predictions(http_json(url, body, timeout, _what(model_name, version)))


def rest_model_status(
    server: str, model_name: str, version: int | None = None, timeout: float = 10.0
) -> dict:
    """`{"model_version_status": [{"version": "1", "state": "AVAILABLE", ...}]}`."""
    url = rest_url(server, model_name, version)
    return http_json(url, None, timeout, _what(model_name, version))


def rest_model_metadata(
    server: str, model_name: str, version: int | None = None, timeout: float = 10.0
) -> dict:
    """`{"model_spec": ..., "metadata": {"signature_def": ...}}`."""
    url = rest_url(server, model_name, version, "/metadata")
    return http_json(url, None, timeout, _what(model_name, version))


# ---------------------------------------------------------------- gRPC


def grpc_predict_request(
    images: Sequence[bytes],
    model_name: str,
    version: int | None = None,
    signature_name: str = SERVING_DEFAULT,
) -> object:
    """A PredictRequest with the images as the string tensor `image_bytes` [batch]."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if not images:
        raise ValueError("No images to send: pass at least one image.")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)])
    )
    return request


def parse_grpc_predictions(response: object) -> list[Prediction]:
    """Predictions from a PredictResponse (its `outputs` map of TensorProtos)."""
    import tensorflow as tf

    outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    return [
        _prediction({k: v[i] for k, v in outputs.items()}) for i in range(len(outputs["top_k_ids"]))
    ]


def _grpc_error(
    error: Exception, server: str, model_name: str, version: int | None
) -> ServingError:
    import grpc

    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServingError(
            f"Cannot connect to TF Serving's gRPC API at {server} ({details}). Is "
            "tensorflow_model_server running there with --port set to this port?"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return ServingError(f"TF Serving at {server} does not serve {_what(model_name, version)}: "
                            f"{details}")  # fmt: skip
    name = code.name if code is not None else "error"
    return ServingError(f"TF Serving at {server} returned {name}: {details}")


def _call(
    stub_method: Callable,
    request: object,
    server: str,
    model_name: str,
    version: int | None,
    timeout: float,
) -> object:
    import grpc

    try:
        return stub_method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise _grpc_error(error, server, model_name, version) from error


def grpc_predict(
    server: str,
    model_name: str,
    images: Sequence[bytes],
    version: int | None = None,
    signature_name: str = SERVING_DEFAULT,
    timeout: float = 30.0,
) -> list[Prediction]:
    """Top-k predictions through PredictionService.Predict."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_predict_request(images, model_name, version, signature_name)
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = _call(stub.Predict, request, server, model_name, version, timeout)
    return parse_grpc_predictions(response)


def grpc_model_status(
    server: str, model_name: str, version: int | None = None, timeout: float = 10.0
) -> dict:
    """ModelService.GetModelStatus as the same dict as the REST status."""
    import grpc
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    if version is not None:
        request.model_spec.version.value = version
    with grpc.insecure_channel(server) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        response = _call(stub.GetModelStatus, request, server, model_name, version, timeout)
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


def grpc_model_metadata(
    server: str, model_name: str, version: int | None = None, timeout: float = 10.0
) -> dict:
    """PredictionService.GetModelMetadata (signature_def) as a dict."""
    import grpc
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model_name
    if version is not None:
        request.model_spec.version.value = version
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = _call(stub.GetModelMetadata, request, server, model_name, version, timeout)
    return json_format.MessageToDict(response, preserving_proto_field_name=True)
