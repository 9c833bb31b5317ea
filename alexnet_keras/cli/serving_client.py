"""Sends images to a running TF Serving and prints the top-5 (CLI over `serving.client`).

    python tools/serving_client.py cat.jpg dog.png --server=localhost:8501 --protocol=rest
    python tools/serving_client.py cat.jpg --server=localhost:8500 --protocol=grpc --version=2
    python tools/serving_client.py --server=localhost:8501 --status      # model status + metadata

Start the server with the command `python tools/export.py` prints. REST is port 8501, gRPC 8500.
"""

from __future__ import annotations

import json

from absl import app, flags

from alexnet_keras.cli import common
from alexnet_keras.serving import client


def define_flags() -> None:
    flags.DEFINE_string("server", "localhost:8501", "HOST:PORT of TF Serving (REST or gRPC port).")
    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "REST (JSON) or gRPC.")
    flags.DEFINE_string("model_name", "alexnet", "Served model name.")
    flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
    flags.DEFINE_string("signature_name", "serving_default", "Signature taking image_bytes.")
    flags.DEFINE_bool("status", False, "Print the model's status and metadata.")
    flags.DEFINE_float("timeout", 30.0, "Seconds per request.")


def _main(argv: list[str]) -> None:
    f = flags.FLAGS
    paths = argv[1:]
    if not paths and not f.status:
        raise app.UsageError("Pass image files, or --status.")
    rest = f.protocol == "rest"
    if f.status:
        status = client.rest_model_status if rest else client.grpc_model_status
        metadata = client.rest_model_metadata if rest else client.grpc_model_metadata
        print(json.dumps(status(f.server, f.model_name, f.version, f.timeout), indent=2))
        print(json.dumps(metadata(f.server, f.model_name, f.version, f.timeout), indent=2))
    if paths:
        images = []
        for path in paths:
            with open(path, "rb") as image_file:
                images.append(image_file.read())
        predict = client.rest_predict if rest else client.grpc_predict
        predictions = predict(
            f.server, f.model_name, images, f.version, f.signature_name, f.timeout
        )
        print(client.format_predictions(paths, predictions))


def main() -> None:
    """`python tools/serving_client.py` and the console script `alexnet-serving-client`."""
    # REST needs only the standard library; gRPC imports TensorFlow when it builds a request.
    common.run(define_flags, _main, user_errors=(client.ServingError, OSError), tensorflow=False)


if __name__ == "__main__":
    main()
