"""Tiny exports for the export, predict and client tests: a 4-class 67x67 run and a few images."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from fake_data import encode, smooth_image
from PIL import Image
from train_helpers import CLASSES, SIZE, tiny_arrays, tiny_config

from alexnet_keras.data import pixels, preprocessing, stats
from alexnet_keras.model import build_alexnet

STATS = stats.DatasetStats(
    mean_rgb=(120.0, 110.0, 100.0),
    eigval=(50.0, 5.0, 1.0),
    eigvec=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    mean_image=tuple(
        tuple((100.0 + 5 * y, 110.0 + 3 * x, 120.0) for x in range(8)) for y in range(8)
    ),  # A mean image, so the tests cover mean-image subtraction (resized, centre window).
    source="test",
)


def write_run_dir(directory, seed=0, classes=CLASSES, run_stats=STATS):
    """A run directory as training writes it, without training (random weights): ~2 s."""
    os.makedirs(directory, exist_ok=True)
    config = tiny_config(directory)
    model = build_alexnet(
        len(classes), (SIZE, SIZE, 3), kernel_initializer="he_normal", seed=seed,
        input_scale=config.input_scale, fc_units=config.fc_units,
    )  # fmt: skip
    model.save(os.path.join(directory, "best.keras"))
    model.save(os.path.join(directory, "last.keras"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        f.write(config.to_json())
    with open(os.path.join(directory, "class_names.json"), "w") as f:
        json.dump(list(classes), f)
    stats.save_stats(run_stats, os.path.join(directory, "stats.json"))
    return str(directory)


def sample_images():
    """Encoded test images: colour JPEG, grayscale PNG, a large landscape JPEG."""
    gray = smooth_image(50, 90, seed=3)[..., 0]  # 2-D: PIL writes a grayscale PNG.
    return [
        encode(smooth_image(60, 80, seed=1)),
        encode(gray, "PNG"),
        encode(smooth_image(240, 320, seed=2)),
    ]


def training_like_jpegs(n=2, seed=5):
    """(JPEG bytes, labels): tiny_arrays images (a bright quadrant per class) as 0..255 pixels,
    stretched to 90x120 so evaluation's resize and crops matter. A tiny run trained on such
    images answers them unsaturated and differently (random smooth images get one class at 0.99).
    """
    images, labels = tiny_arrays(n=n, seed=seed)
    jpegs = []
    for image in images:
        pixels = Image.fromarray(np.clip(np.round(image + 120), 0, 255).astype(np.uint8))
        jpegs.append(encode(np.asarray(pixels.resize((120, 90), Image.BILINEAR))))
    return jpegs, labels


def write_images(directory):
    paths = []
    for i, data in enumerate(sample_images()):
        path = os.path.join(directory, f"image{i}.{'png' if i == 1 else 'jpg'}")
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def reference_probabilities(model, data_stats, images, image_size=SIZE, ten_crop=False):
    """What the in-memory model gives for encoded images with the shared eval preprocessing."""
    results = []
    for data in images:
        image = pixels.decode_image(tf.constant(data))
        x = preprocessing.preprocess_for_eval(image, data_stats, image_size, ten_crop=ten_crop)
        x = x if ten_crop else x[None]
        probabilities = keras.ops.softmax(model(x, training=False)).numpy()
        results.append(probabilities.mean(axis=0))
    return np.stack(results)
