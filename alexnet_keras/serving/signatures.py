"""The serving graph: a trained AlexNet plus the evaluation preprocessing, as SavedModel signatures.

Signatures (all with method name `tensorflow/serving/predict`, TF Serving's Predict API):

  serving_default       image_bytes: string [batch]  encoded JPEG/PNG/GIF/BMP, any size, colour or
                        grayscale -> decode, shorter side -> resize_size, centre crop (or the
                        paper's 10 crops, averaged), minus the training mean. The same functions
                        the evaluation pipeline runs (`pixels.decode_image`,
                        `preprocessing.preprocess_for_eval`), not a copy.
  predict_images        images: float32 [batch, S, S, 3]  RGB pixels on the 0..255 scale, already
                        cropped to the network's input size S (e.g. the centre crop); the graph
                        subtracts the mean (the centre window of the mean image, as evaluation).
  predict_images_uint8  images: uint8 [batch, S, S, 3]  the same for uint8 pixels.

Every signature returns `probabilities` float32 [batch, classes] (softmax; the 10-crop average when
exported with ten_crop), `top_k_ids` int32 [batch, k], `top_k_scores` float32 [batch, k] and
`top_k_labels` string [batch, k] (human-readable class names).

The network comes from `run_dir.load_inference_model`: the layers with their portable kernels
(`kernels.PORTABLE`: plain TF ops, one convolution per column, LRN in float32, no XLA, nothing
chosen by the exporting machine), float32 or bfloat16 weights, no device pins.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from alexnet_keras.data import geometry, pixels, preprocessing
from alexnet_keras.data.stats import DatasetStats

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGES = "predict_images"
PREDICT_IMAGES_UINT8 = "predict_images_uint8"
SIGNATURES = (SERVING_DEFAULT, PREDICT_IMAGES, PREDICT_IMAGES_UINT8)
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
OUTPUTS = ("probabilities", "top_k_ids", "top_k_scores", "top_k_labels")

# Magic numbers of the formats tf.io.decode_image reads; checked first so that non-image bytes
# fail with a message naming the input rather than "Unknown image file format".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def _check_image_bytes(image_bytes: tf.Tensor, index: tf.Tensor) -> tf.Operation:
    is_image = tf.reduce_any(
        [tf.equal(tf.strings.substr(image_bytes, 0, len(m)), m) for m in _MAGIC]
    )
    return tf.debugging.Assert(
        is_image,
        [tf.strings.format(BYTES_INPUT + "[{}] is not a JPEG, PNG, GIF or BMP image.", index)],
    )


def _check_batch(tensor: tf.Tensor, name: str) -> tf.Operation:
    return tf.debugging.assert_greater(
        tf.shape(tensor)[0], 0, message=f"{name}: the batch is empty; send at least one image."
    )


class ServingFunctions:
    """The signature functions over one model; `export_archive()` packs them as a SavedModel."""

    def __init__(
        self,
        model: keras.Model,
        labels: Sequence[str],
        stats: DatasetStats,
        image_size: int,
        resize_size: int | None = None,
        ten_crop: bool = False,
        top_k: int = 5,
    ):
        if len(labels) != model.output_shape[-1]:
            raise ValueError(
                f"{len(labels)} class names for a model with {model.output_shape[-1]} classes."
            )
        if not 1 <= top_k:
            raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k}")
        self.model = model
        self.labels = list(labels)
        self.stats = stats
        self.image_size = image_size
        self.resize_size = resize_size or geometry.default_resize_size(image_size)
        self.ten_crop = ten_crop
        self.top_k = min(top_k, len(labels))

    def _outputs(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        scores, ids = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "top_k_ids": ids,
            "top_k_scores": scores,
            "top_k_labels": tf.gather(tf.constant(self.labels), ids),
        }

    def _preprocess_one(self, args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image_bytes, index = args
        with tf.control_dependencies([_check_image_bytes(image_bytes, index)]):
            image = pixels.decode_image(image_bytes)
        return preprocessing.preprocess_for_eval(
            image, self.stats, self.image_size, self.resize_size, ten_crop=self.ten_crop
        )

    def serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """serving_default: encoded images -> outputs (10-crop softmax average if ten_crop)."""
        with tf.control_dependencies([_check_batch(image_bytes, BYTES_INPUT)]):
            indices = tf.range(tf.shape(image_bytes)[0])
        size = self.image_size
        crops_shape = [10, size, size, 3] if self.ten_crop else [size, size, 3]
        images = tf.map_fn(
            self._preprocess_one,
            (image_bytes, indices),
            fn_output_signature=tf.TensorSpec(crops_shape, tf.float32),
        )
        if not self.ten_crop:
            return self._outputs(tf.nn.softmax(self.model(images, training=False)))
        # Sec. 4.1: average the softmax over the ten crops.
        logits = self.model(tf.reshape(images, [-1, size, size, 3]), training=False)
        probabilities = tf.nn.softmax(tf.reshape(logits, [-1, 10, logits.shape[-1]]))
        return self._outputs(tf.reduce_mean(probabilities, axis=1))

    def _check_images_shape(self, images: tf.Tensor) -> tf.Operation:
        # A run-time check: a session feed (TF Serving) bypasses the signature's static shape.
        size = self.image_size
        shape = tf.shape(images)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)  # Rank < 4 still slices.
        ok = tf.logical_and(
            tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(padded[1:4], [size, size, 3]))
        )
        return tf.debugging.Assert(
            ok,
            [f"{IMAGES_INPUT}: expected shape [batch, {size}, {size}, 3]; received", shape],
            summarize=8,  # The default of 3 values would hide the channel count.
        )

    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """predict_images: cropped 0..255 RGB pixels -> outputs (mean subtracted here)."""
        checks = [self._check_images_shape(images), _check_batch(images, IMAGES_INPUT)]
        with tf.control_dependencies(checks):
            # identity: for float32 input the cast adds no op, and the checks would be dropped,
            # racing the preprocessing's own (unnamed) shape error.
            images = tf.identity(tf.cast(images, tf.float32))
        # The per-image function vectorized into batched ops (pfor), not a loop of one image each.
        normalized = tf.vectorized_map(
            lambda image: preprocessing.normalize(image, self.stats, resize_size=self.resize_size),
            images,
            fallback_to_while_loop=False,
        )
        return self._outputs(tf.nn.softmax(self.model(normalized, training=False)))

    def input_signatures(self) -> dict[str, tf.TensorSpec]:
        """Each signature's one input."""
        shape = [None, self.image_size, self.image_size, 3]
        return {
            SERVING_DEFAULT: tf.TensorSpec([None], tf.string, name=BYTES_INPUT),
            PREDICT_IMAGES: tf.TensorSpec(shape, tf.float32, name=IMAGES_INPUT),
            PREDICT_IMAGES_UINT8: tf.TensorSpec(shape, tf.uint8, name=IMAGES_INPUT),
        }

    def export_archive(self) -> keras.export.ExportArchive:
        """A Keras ExportArchive with the three signatures (`write_out(path)` writes it)."""
        archive = keras.export.ExportArchive()
        archive.track(self.model)
        specs = self.input_signatures()

        def serving_default(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.serve_bytes(image_bytes)

        def predict_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.serve_images(images)

        archive.add_endpoint(SERVING_DEFAULT, serving_default, [specs[SERVING_DEFAULT]])
        archive.add_endpoint(PREDICT_IMAGES, predict_images, [specs[PREDICT_IMAGES]])
        archive.add_endpoint(PREDICT_IMAGES_UINT8, predict_images, [specs[PREDICT_IMAGES_UINT8]])
        return archive
