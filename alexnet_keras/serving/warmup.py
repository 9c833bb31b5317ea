"""TF Serving warmup requests: `assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords).

TF Serving replays these records when it loads a version, before it marks the version AVAILABLE,
so the first real request does not pay for graph initialisation and memory allocation. The records
cover every signature, and serving_default gets both a colour JPEG and a grayscale PNG so both
decoders are warmed up. Needs the `serving` extra (tensorflow-serving-api) for the protos.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from alexnet_keras.serving import signatures

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def _apis():  # noqa: ANN202 - a module; imported lazily because it is an optional extra.
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Writing or reading TF Serving warmup requests needs tensorflow-serving-api: "
            "`pip install -e .[serving]` (or export with --nowarmup)."
        ) from error
    return model_pb2, predict_pb2, prediction_log_pb2


def sample_image_bytes(height: int = 96, width: int = 128) -> list[bytes]:
    """A colour JPEG and a grayscale PNG of a smooth gradient (any content warms up the graph)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (height + width)], -1)
    rgb = tf.constant(rgb.astype(np.uint8))
    gray = tf.image.rgb_to_grayscale(rgb)
    return [tf.io.encode_jpeg(rgb).numpy(), tf.io.encode_png(gray).numpy()]


def warmup_requests(model_name: str, image_size: int) -> list:
    """PredictionLog protos: serving_default (batches of 1 and 2) and both predict_images."""
    model_pb2, predict_pb2, prediction_log_pb2 = _apis()
    images = sample_image_bytes()
    pixels = np.full([1, image_size, image_size, 3], 128, np.uint8)
    inputs = [
        (signatures.SERVING_DEFAULT, signatures.BYTES_INPUT, tf.make_tensor_proto(images[:1])),
        (signatures.SERVING_DEFAULT, signatures.BYTES_INPUT, tf.make_tensor_proto(images)),
        (
            signatures.PREDICT_IMAGES,
            signatures.IMAGES_INPUT,
            tf.make_tensor_proto(pixels, tf.float32),
        ),
        (signatures.PREDICT_IMAGES_UINT8, signatures.IMAGES_INPUT, tf.make_tensor_proto(pixels)),
    ]
    logs = []
    for signature, input_name, tensor in inputs:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        request.inputs[input_name].CopyFrom(tensor)
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return logs


def write_warmup_file(saved_model_dir: str, model_name: str, image_size: int) -> str:
    """Writes the warmup records into `saved_model_dir/assets.extra/`; returns the file path."""
    directory = os.path.join(saved_model_dir, WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, image_size):
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path: str) -> list:
    """The PredictionLog records of a warmup file (raises if a record does not parse)."""
    _, _, prediction_log_pb2 = _apis()
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs
