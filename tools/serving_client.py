"""Sends images to a running TF Serving and prints the top-5 (a thin CLI over serving_client).

    python tools/serving_client.py cat.jpg dog.png --server=localhost:8501 --protocol=rest
    python tools/serving_client.py cat.jpg --server=localhost:8500 --protocol=grpc --version=2
    python tools/serving_client.py --server=localhost:8501 --status      # model status + metadata

Start the server with the command `python tools/export.py` prints. REST is port 8501, gRPC 8500.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from alexnet_keras import serving_client as client  # noqa: E402


def define_flags() -> None:
    flags.DEFINE_string("server", "localhost:8501", "HOST:PORT of TF Serving (REST or gRPC port).")
    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "REST (JSON) or gRPC.")
    flags.DEFINE_string("model_name", "alexnet", "Served model name.")
    flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
    flags.DEFINE_string("signature_name", "serving_default", "Signature taking image_bytes.")
    flags.DEFINE_bool("status", False, "Print the model's status and metadata.")
    flags.DEFINE_float("timeout", 30.0, "Seconds per request.")


def main(argv: list[str]) -> None:
    f = flags.FLAGS
    paths = argv[1:]
    if not paths and not f.status:
        raise app.UsageError("Pass image files, or --status.")
    rest = f.protocol == "rest"
    try:
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
    except (client.ServingError, OSError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
