"""fc7 nearest neighbours (Fig. 4 right): training images whose last hidden layer is nearest.

Sec. 6.1: "If two images produce feature activation vectors with a small Euclidean separation, we
can say that the higher levels of the neural network consider them to be similar." Queries come
from the evaluation split, the index from the training split, both through the shared input
pipeline's centre crop (`pipeline.build_dataset(training=False)`), so features are exactly those
evaluation sees. Search is exact (brute force in NumPy): the index is capped (e.g. 2000 images).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from alexnet_keras.data import geometry, pipeline, preprocessing, sources
from alexnet_keras.data.stats import DatasetStats

FEATURE_LAYER = "fc7"


@dataclasses.dataclass(frozen=True)
class Features:
    """Images' fc7 features with what is needed to show them.

    Attributes:
        features: float32 [n, 4096], fc7 (after its ReLU) in inference mode (no dropout).
        images: uint8 [n, size, size, 3], the centre crops with the mean added back, for display.
        labels: int32 [n].
    """

    features: np.ndarray
    images: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class NeighbourResult:
    """`indices[q]` / `distances[q]`: query q's nearest index images, nearest first."""

    queries: Features
    index: Features
    indices: np.ndarray
    distances: np.ndarray
    class_names: tuple[str, ...]


def feature_model(model: keras.Model, layer_name: str = FEATURE_LAYER) -> keras.Model:
    """A model from the network's input to `layer_name`'s output (fc7: the 4096-d features)."""
    return keras.Model(model.input, model.get_layer(layer_name).output, name=f"{layer_name}_model")


def display_mean(
    data_stats: DatasetStats, image_size: int, resize_size: int | None = None
) -> np.ndarray:
    """The mean the evaluation crop had subtracted, [size, size, 3] (to add back for display).

    Computed by the shared evaluation preprocessing itself: preprocessing a black image gives
    exactly minus the subtracted mean (the centre window of the mean image, or the RGB mean).
    """
    resize_size = resize_size or geometry.default_resize_size(image_size)
    black = tf.zeros([resize_size, resize_size, 3], tf.float32)
    crop = preprocessing.preprocess_for_eval(black, data_stats, image_size, resize_size)
    return -crop.numpy()


def extract_features(
    extractor: keras.Model, dataset: tf.data.Dataset, limit: int, mean: np.ndarray
) -> Features:
    """Runs up to `limit` images of a (images, labels) dataset through `extractor`."""
    features, images, labels = [], [], []
    count = 0
    for batch, batch_labels in dataset:
        if count >= limit:
            break
        batch, batch_labels = batch[: limit - count], batch_labels[: limit - count]
        features.append(np.asarray(extractor(batch, training=False), np.float32))
        images.append(np.clip(np.round(batch.numpy() + mean), 0, 255).astype(np.uint8))
        labels.append(batch_labels.numpy().astype(np.int32))
        count += len(batch_labels)
    if not count:
        raise ValueError("The dataset yielded no images.")
    return Features(np.concatenate(features), np.concatenate(images), np.concatenate(labels))


def nearest_neighbours(
    queries: np.ndarray, index: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-nearest neighbours: (indices [q, k] int64, distances [q, k] float32).

    Computed as the norm of the difference (not |a|^2 + |b|^2 - 2ab, which cancels badly), so
    an image that is in the index is found at distance exactly 0. Ties keep index order.
    """
    queries, index = np.asarray(queries, np.float32), np.asarray(index, np.float32)
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(
            f"Expected features [q, d] and [n, d]. Received: {queries.shape}, {index.shape}"
        )
    k = min(k, len(index))
    indices, distances = [], []
    for query in queries:  # One query at a time: [n, d] memory, not [q, n, d].
        difference = index - query
        distance = np.sqrt(np.einsum("nd,nd->n", difference, difference))
        nearest = np.argsort(distance, kind="stable")[:k]
        indices.append(nearest)
        distances.append(distance[nearest])
    return np.stack(indices), np.stack(distances).astype(np.float32)


def search(
    model: keras.Model,
    dataset: str,
    data_stats: DatasetStats,
    image_size: int,
    resize_size: int | None = None,
    num_queries: int = 5,
    k: int = 6,
    index_size: int = 2000,
    query_split: str | None = None,
    index_split: str | None = None,
    batch_size: int = 64,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> NeighbourResult:
    """The first `num_queries` evaluation images and their `k` nearest among the first
    `index_size` training images (in the source's stored order), by fc7 distance."""
    if num_queries < 1 or k < 1 or index_size < 1:
        raise ValueError(
            "num_queries, k and index_size must be >= 1. Received: "
            f"num_queries={num_queries}, k={k}, index_size={index_size}"
        )
    info = sources.dataset_info(dataset, data_dir, manual_dir)
    extractor = feature_model(model)
    mean = display_mean(data_stats, image_size, resize_size)

    def features_of(split: str, limit: int) -> Features:
        ds = pipeline.build_dataset(
            dataset, split, batch_size=min(batch_size, limit), training=False,
            image_size=image_size, resize_size=resize_size, stats=data_stats,
            data_dir=data_dir, manual_dir=manual_dir,
        )  # fmt: skip
        return extract_features(extractor, ds, limit, mean)

    queries = features_of(query_split or info.eval_split, num_queries)
    index = features_of(index_split or info.train_split, index_size)
    indices, distances = nearest_neighbours(queries.features, index.features, k)
    return NeighbourResult(queries, index, indices, distances, info.class_names)
