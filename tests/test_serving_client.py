"""The TF Serving client: documented request/response formats, fake servers, a real one if any."""

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import STATS, reference_probabilities, sample_images
from serving_fakes import (
    FakeGrpcServer,
    FakeRestServer,
    Servable,
    free_ports,
    refusing_address,
)
from tensorflow_serving.apis import predict_pb2
from train_helpers import CLASSES, REPO

from alexnet_keras.run_dir import load_run
from alexnet_keras.serving import client


@pytest.fixture(scope="module")
def run_dir(random_run):
    return random_run


@pytest.fixture(scope="module")
def exported(random_export):
    return random_export


@pytest.fixture(scope="module")
def servable(exported):
    return Servable(exported.path)


def _expected(servable, images):
    out = servable.run("serving_default", {"image_bytes": images})
    return [
        client.Prediction(tuple(labels.astype(str)), tuple(scores), tuple(ids))
        for labels, scores, ids in zip(out["top_k_labels"], out["top_k_scores"], out["top_k_ids"])
    ]


def _assert_same(predictions, expected):
    assert len(predictions) == len(expected)
    for got, want in zip(predictions, expected):
        assert got.labels == want.labels and got.ids == want.ids
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)


def test_rest_request_format():
    assert client.rest_url("h:8501", "alexnet") == "http://h:8501/v1/models/alexnet"
    assert (
        client.rest_url("h:8501", "m", 3, ":predict")
        == "http://h:8501/v1/models/m/versions/3:predict"
    )
    body = client.rest_predict_body([b"\xff\xd8\xffabc", b"\x89PNG"])
    assert body == {"instances": [{"b64": "/9j/YWJj"}, {"b64": "iVBORw=="}]}
    assert client.rest_predict_body([b"x"], "predict_images")["signature_name"] == "predict_images"
    with pytest.raises(ValueError, match="at least one image"):
        client.rest_predict_body([])


def test_rest_response_parsing_row_and_columnar():
    """TF Serving's documented shapes: row format ("predictions") and columnar ("outputs")."""
    row = {
        "predictions": [
            {"probabilities": [0.1, 0.9], "top_k_ids": [1, 0], "top_k_scores": [0.9, 0.1],
             "top_k_labels": ["cat", "dog"]},
        ]
    }  # fmt: skip
    columnar = {
        "outputs": {"probabilities": [[0.1, 0.9]], "top_k_ids": [[1, 0]],
                    "top_k_scores": [[0.9, 0.1]], "top_k_labels": [["cat", "dog"]]}
    }  # fmt: skip
    expected = [client.Prediction(("cat", "dog"), (0.9, 0.1), (1, 0))]
    assert client.parse_rest_predictions(row) == expected
    assert client.parse_rest_predictions(columnar) == expected
    with pytest.raises(client.ServingError, match="Servable not found"):
        client.parse_rest_predictions({"error": "Servable not found for request: Latest(x)"})


def test_grpc_request_and_response_protos():
    request = client.grpc_predict_request([b"a", b"bc"], "alexnet", 4)
    assert request.model_spec.name == "alexnet" and request.model_spec.version.value == 4
    assert request.model_spec.signature_name == "serving_default"
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2]
    assert list(tensor.string_val) == [b"a", b"bc"]
    assert not client.grpc_predict_request([b"a"], "m").model_spec.HasField("version")

    response = predict_pb2.PredictResponse()
    outputs = {
        "probabilities": np.array([[0.2, 0.8]], np.float32),
        "top_k_ids": np.array([[1, 0]], np.int32),
        "top_k_scores": np.array([[0.8, 0.2]], np.float32),
        "top_k_labels": np.array([[b"dog", b"cat"]], object),
    }
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    (prediction,) = client.parse_grpc_predictions(response)
    assert prediction.labels == ("dog", "cat") and prediction.ids == (1, 0)
    np.testing.assert_allclose(prediction.scores, (0.8, 0.2))


def test_rest_against_fake_server(servable, run_dir):
    images = sample_images()
    # The full ranking (4 classes) by the in-memory model, not just "some labels came back".
    expected = reference_probabilities(load_run(run_dir).model, STATS, images)
    ranking = np.argsort(-expected, axis=1, kind="stable")
    with FakeRestServer(servable) as server:
        predictions = client.rest_predict(server.address, "alexnet", images)
        _assert_same(predictions, _expected(servable, images))
        assert [p.ids for p in predictions] == [tuple(row) for row in ranking]
        assert [p.labels for p in predictions] == [tuple(np.array(CLASSES)[r]) for r in ranking]
        _assert_same(client.rest_predict(server.address, "alexnet", images[:1], version=1),
                     _expected(servable, images[:1]))  # fmt: skip
        status = client.rest_model_status(server.address, "alexnet")
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        assert (
            "serving_default"
            in client.rest_model_metadata(server.address, "alexnet", 1)["metadata"]["signature_def"]
        )
        with pytest.raises(client.ServingError, match="does not serve model 'nope'.*Could not"):
            client.rest_predict(server.address, "nope", images)
        with pytest.raises(client.ServingError, match="version 7.*Specific\\(alexnet, 7\\)"):
            client.rest_model_status(server.address, "alexnet", 7)
        with pytest.raises(client.ServingError, match=r"(?s)HTTP 400.*image_bytes\[0\] is not"):
            client.rest_predict(server.address, "alexnet", [b"not an image"])


def test_grpc_against_fake_server(servable):
    images = sample_images()
    with FakeGrpcServer(servable) as server:
        _assert_same(client.grpc_predict(server.address, "alexnet", images),
                     _expected(servable, images))  # fmt: skip
        status = client.grpc_model_status(server.address, "alexnet", 1)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        with pytest.raises(client.ServingError, match="does not serve model 'alexnet' version 9"):
            client.grpc_predict(server.address, "alexnet", images, version=9)
        invalid = r"(?s)INVALID_ARGUMENT.*image_bytes\[0\] is not"
        with pytest.raises(client.ServingError, match=invalid):
            client.grpc_predict(server.address, "alexnet", [b"junk"])


def test_connection_refused_is_clear():
    with refusing_address() as address:
        with pytest.raises(client.ServingError, match="Cannot connect to TF Serving's REST API"):
            client.rest_predict(address, "alexnet", [b"x"], timeout=5)
        with pytest.raises(client.ServingError, match="Cannot connect to TF Serving's gRPC API"):
            client.grpc_predict(address, "alexnet", [b"x"], timeout=5)


def test_cli_against_fake_rest_server(servable, tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(sample_images()[0])
    tool = os.path.join(REPO, "tools", "serving_client.py")
    with FakeRestServer(servable) as server, refusing_address() as nobody:
        done = subprocess.run(
            [sys.executable, tool, str(path), f"--server={server.address}", "--status"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        refused = subprocess.run(
            [sys.executable, tool, str(path), f"--server={nobody}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "AVAILABLE" in done.stdout and str(path) in done.stdout and "1. " in done.stdout
    assert refused.returncode == 2 and "Cannot connect" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("tensorflow_model_server") is None,
    reason="tensorflow_model_server is not on PATH (TF Serving is not installable here)",
)
def test_real_tensorflow_model_server(exported, servable):
    for _ in range(3):  # Ports released for the server to bind: another process may take one.
        rest, grpc_port = free_ports(2)
        server = subprocess.Popen([
            "tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest}",
            f"--model_config_file={exported.models_config}",
        ])  # fmt: skip
        if _wait_until_available(server, rest):
            break
        server.terminate()
        server.wait(30)
    else:
        pytest.fail("tensorflow_model_server did not serve the model (three tries)")
    try:
        images = sample_images()
        expected = _expected(servable, images)
        _assert_same(client.rest_predict(f"127.0.0.1:{rest}", "alexnet", images), expected)
        _assert_same(client.grpc_predict(f"127.0.0.1:{grpc_port}", "alexnet", images), expected)
        with pytest.raises(client.ServingError, match="does not serve"):
            client.rest_predict(f"127.0.0.1:{rest}", "alexnet", images, version=99)
    finally:
        server.terminate()
        server.wait(30)


def _wait_until_available(server, rest):
    """Whether the model became AVAILABLE (False if the server exited: a port was taken)."""
    for _ in range(120):
        if server.poll() is not None:
            return False
        try:
            status = client.rest_model_status(f"127.0.0.1:{rest}", "alexnet")
            if status["model_version_status"][0]["state"] == "AVAILABLE":
                return True
        except client.ServingError:
            pass
        time.sleep(0.5)
    return False


def test_b64_round_trip_matches_documented_example():
    # TF Serving's REST docs: binary data goes as {"b64": base64 of the raw bytes}.
    body = client.rest_predict_body([b"hello"])
    assert base64.b64decode(body["instances"][0]["b64"]) == b"hello"
    assert json.loads(json.dumps(body)) == body
