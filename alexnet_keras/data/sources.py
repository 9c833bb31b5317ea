"""Image-classification sources by name, as tf.data datasets of raw examples.

Names (the `--dataset` flag):
  imagenet2012     TFDS's own builder, prepared once from the user's ILSVRC2012_img_train.tar and
                   ILSVRC2012_img_val.tar in `manual_dir` (via tfds.download.DownloadConfig).
  folder:<path>    a directory <path>/<split>/<class>/*.jpg|png, read by TFDS's ImageFolder.
  fashion_mnist    the built-in demo, read offline from Debian's dataset-fashion-mnist IDX files.
  <any tfds name>  any TFDS image-classification dataset (imagenette, oxford_flowers102, cifar10);
                   downloaded by TFDS when network access exists.

Every source yields dicts {"image", "label", "key"}: "image" is encoded bytes (tf.string) where the
source stores them (so training can use the fused JPEG decode+crop) or a uint8 [H, W, C] array;
"label" is int32; "key" names the example (file name or TFDS id) for bad-image reports.
Nothing here downloads in tests, and nothing sits in network retries offline: a missing dataset
fails at once with a message that says where we looked and how to get the data.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import gzip
import os
import socket
import struct

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_keras.data.folder import FOLDER_PREFIX, image_folder
from alexnet_keras.data.order import IndexedSplit, ShardedSplit

Builder = tfds.core.DatasetBuilder

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "ALEXNET_FASHION_MNIST_DIR"  # Overrides FASHION_MNIST_DIR (tests use it).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGENET_TARS = {"train": "ILSVRC2012_img_train.tar", "validation": "ILSVRC2012_img_val.tar"}
NO_DOWNLOADS_ENV = "ALEXNET_NO_DOWNLOADS"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What training and evaluation need to know about a source."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    train_split: str
    eval_split: str
    num_train_examples: int
    num_eval_examples: int


def _network_available(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """One quick TCP connect: an offline machine fails in seconds, not minutes of retries.

    $ALEXNET_NO_DOWNLOADS=1 says no without trying (the test suite sets it: no test downloads).
    """
    if os.environ.get(NO_DOWNLOADS_ENV) == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# --- Fashion-MNIST
def fashion_mnist_dir(manual_dir: str | None = None) -> str:
    """Fashion-MNIST IDX directory: manual_dir, $ALEXNET_FASHION_MNIST_DIR, or Debian's."""
    return manual_dir or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR


def _fashion_files(directory: str, split: str) -> tuple[str, str] | None:
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"Fashion-MNIST has splits 'train' and 'test'. Received: {split!r}")
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        paths = [os.path.join(directory, f"{prefix}-{kind}{ext}") for ext in (".gz", "")]
        found.append(next((p for p in paths if os.path.exists(p)), None))
    return None if None in found else tuple(found)


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (the MNIST format, optionally gzipped) into a uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (magic {data[:4].hex()}).")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {array.size} values.")
    return array.reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_fashion_arrays(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _fashion_files(directory, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels."
        )
    return images[..., None], labels.astype(np.int32)


def _fashion_mnist(split: str, manual_dir: str | None) -> tf.data.Dataset | None:
    """Fashion-MNIST from local IDX files, or None when they are absent.

    Read directly with NumPy instead of through TFDS's `fashion_mnist` builder: the builder only
    knows how to download (its URLs and byte checksums don't match Debian's files), it hard-codes
    60,000/10,000 examples (so tiny test files can't be used), and preparing re-encodes 70,000
    images as PNG. The arrays are 55 MB, so in-memory tensors are the fastest source anyway.
    """
    directory = fashion_mnist_dir(manual_dir)
    if _fashion_files(directory, split) is None:
        return None
    images, labels = _load_fashion_arrays(directory, split)
    keys = [f"fashion_mnist/{split}/{i}" for i in range(len(labels))]
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "key": keys})


# --- TFDS builders
def _imagenet_builder(data_dir: str | None, manual_dir: str | None, split: str | None):
    """TFDS's imagenet2012 builder, prepared from the manual tars on first use."""
    builder = tfds.builder("imagenet2012", data_dir=data_dir, try_gcs=False)
    if builder.is_prepared():
        return builder
    directory = os.path.abspath(
        os.path.expanduser(manual_dir or os.path.join(builder.data_dir_root, "downloads", "manual"))
    )
    needed = [IMAGENET_TARS[s] for s in IMAGENET_TARS if split in (None, s)]
    missing = [tar for tar in needed if not os.path.exists(os.path.join(directory, tar))]
    if missing:
        raise FileNotFoundError(
            f"ImageNet is not prepared in {builder.data_dir_root} and {', '.join(missing)} "
            f"was not found in the manual directory {directory}. Download "
            f"{' and '.join(IMAGENET_TARS.values())} from https://image-net.org/download-images "
            "(free registration) and pass their directory as --manual_dir."
        )
    logging.info(
        "Preparing imagenet2012 from %s into %s (hours for the full tars).",
        directory,
        builder.data_dir_root,
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=directory, try_download_gcs=False)
    )
    return builder


def _tfds_builder(name: str, data_dir: str | None, manual_dir: str | None, split: str | None):
    if name == "imagenet2012":
        return _imagenet_builder(data_dir, manual_dir, split)
    root = image_folder(name)
    if root is not None:
        return tfds.folder_dataset.ImageFolder(root)
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError:
        # TFDS's own message lists all its ~1,300 datasets; name the closest few instead.
        closest = difflib.get_close_matches(name, tfds.list_builders(), n=3)
        raise ValueError(
            f"Unknown dataset {name!r}. Use imagenet2012, fashion_mnist, folder:<path> or a TFDS "
            f"image dataset name{'; closest: ' + ', '.join(closest) if closest else ''}."
        ) from None
    if builder.is_prepared():
        return builder
    if name == "fashion_mnist":
        hint = (
            f"Install Debian's copy with `apt-get install -y dataset-fashion-mnist` (files in "
            f"{FASHION_MNIST_DIR}), or set ${FASHION_MNIST_ENV} / --manual_dir to a directory "
            "with the four *-idx*-ubyte.gz files"
        )
    else:
        hint = f"Run once with network access so TFDS can download it, or `tfds build {name}`"
    if not _network_available():
        looked = f"{fashion_mnist_dir(manual_dir)} and " if name == "fashion_mnist" else ""
        raise FileNotFoundError(
            f"Dataset {name!r} was not found in {looked}the TFDS data dir "
            f"{builder.data_dir_root}, and there is no network. {hint}."
        )
    dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=dl_config)
    return builder


def _check_split(builder: Builder, name: str, split: str) -> None:
    base = split.split("[")[0]
    if base not in builder.info.splits:
        raise ValueError(
            f"Dataset {name!r} has no split {split!r}. Available: {sorted(builder.info.splits)}"
        )


def _features(builder: Builder) -> tuple[str, str, str | None]:
    """(image key, label key, key-name feature or None) of a builder."""
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    features = builder.info.features
    name_key = next((k for k in ("file_name", "image/filename") if k in features), None)
    return image_key, label_key, name_key


def _tfds_split(
    builder: Builder, split: str, input_context: tf.distribute.InputContext | None
) -> tf.data.Dataset:
    image_key, label_key, name_key = _features(builder)
    decoders = {image_key: tfds.decode.SkipDecoding()}  # Keep JPEG bytes for the fused decode.
    if isinstance(builder, tfds.folder_dataset.ImageFolder):
        # ImageFolder ignores ReadConfig: shard ourselves.
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
        if input_context is not None:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    else:
        read_config = tfds.ReadConfig(
            input_context=input_context, add_tfds_id=True, try_autocache=False
        )
        ds = builder.as_dataset(
            split=split, shuffle_files=False, decoders=decoders, read_config=read_config
        )

    def to_example(ex: dict) -> dict:
        key = ex[name_key] if name_key else ex.get("tfds_id", tf.constant(""))
        return {"image": ex[image_key], "label": tf.cast(ex[label_key], tf.int32), "key": key}

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)


# --- public API
def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Raw examples {"image", "label", "key"} of one split in stored order (see module doc).

    With `input_context`, only this worker's shard is read (files for TFDS, examples otherwise).
    Training reads `training_split` instead, in the order of `order.training_stream`.
    """
    if name == "fashion_mnist":
        ds = _fashion_mnist(split, manual_dir)
        if ds is not None:
            if input_context is not None:
                ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            return ds
        logging.warning(
            "Fashion-MNIST IDX files not found in %s; trying TFDS.", fashion_mnist_dir(manual_dir)
        )
    builder = _tfds_builder(name, data_dir, manual_dir, split)
    _check_split(builder, name, split)
    return _tfds_split(builder, split, input_context)


def training_split(
    name: str, split: str, *, data_dir: str | None = None, manual_dir: str | None = None
) -> IndexedSplit | ShardedSplit:
    """The split as `order.training_stream` reads it: examples by index, or record shards.

    In-memory arrays and image folders are fetched by index; TFDS datasets by their TFRecord
    shards (TFDS's documented `file_instructions`), decoded like `load_split`'s examples.
    """
    if name == "fashion_mnist":
        directory = fashion_mnist_dir(manual_dir)
        if _fashion_files(directory, split) is not None:
            images, labels = _load_fashion_arrays(directory, split)
            return _indexed_arrays(images, labels, f"fashion_mnist/{split}/")
    builder = _tfds_builder(name, data_dir, manual_dir, split)
    _check_split(builder, name, split)
    if isinstance(builder, tfds.folder_dataset.ImageFolder):
        return _indexed_folder(builder, split)
    return _sharded_tfds(builder, split)


def _indexed_arrays(images: np.ndarray, labels: np.ndarray, prefix: str) -> IndexedSplit:
    images, labels = tf.constant(images), tf.constant(labels)

    def fetch(index: tf.Tensor) -> dict:
        key = tf.strings.join([prefix, tf.strings.as_string(index)])
        return {"image": tf.gather(images, index), "label": tf.gather(labels, index), "key": key}

    return IndexedSplit(int(labels.shape[0]), fetch)


def _indexed_folder(builder: tfds.folder_dataset.ImageFolder, split: str) -> IndexedSplit:
    """An image folder's files (TFDS ImageFolder's listing: sorted classes and files)."""
    names = builder.info.features["label"].names
    root = os.path.join(builder.data_dir, split)  # ImageFolder: data_dir is the root folder.
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(root, name)
        files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for file in files:
            if file.lower().endswith((".jpg", ".jpeg", ".png")):
                paths.append(os.path.join(folder, file))
                labels.append(label)
    if not paths:
        raise FileNotFoundError(f"No .jpg/.jpeg/.png images under {root}/<class>/.")
    paths_t, labels_t = tf.constant(paths), tf.constant(labels, tf.int32)

    def fetch(index: tf.Tensor) -> dict:
        path = tf.gather(paths_t, index)
        return {"image": tf.io.read_file(path), "label": tf.gather(labels_t, index), "key": path}

    return IndexedSplit(len(paths), fetch)


def _sharded_tfds(builder: Builder, split: str) -> ShardedSplit:
    image_key, label_key, name_key = _features(builder)
    decoders = {image_key: tfds.decode.SkipDecoding()}  # Keep JPEG bytes for the fused decode.
    instructions = builder.info.splits[split].file_instructions
    files = tuple(os.fspath(i.filename) for i in instructions)
    if not all(os.path.isabs(f) for f in files):
        files = tuple(os.path.join(builder.data_dir, f) for f in files)
    takes = tuple(i.examples_in_shard - i.skip if i.take == -1 else i.take for i in instructions)

    def parse(record: tf.Tensor, where: tf.Tensor) -> dict:
        example = builder.info.features.deserialize_example(record, decoders=decoders)
        key = example[name_key] if name_key else where
        return {"image": example[image_key], "label": tf.cast(example[label_key], tf.int32),
                "key": key}  # fmt: skip

    return ShardedSplit(files, tuple(i.skip for i in instructions), takes, parse)


def _pick(splits: dict, candidates: tuple[str, ...], name: str, what: str) -> str:
    for candidate in candidates:
        if candidate in splits:
            return candidate
    folder = (
        " (a folder's split is a subdirectory with <class>/<image> files; an empty one is none)"
        if name.startswith(FOLDER_PREFIX)
        else ""
    )
    raise ValueError(
        f"Dataset {name!r} has no {what} split (looked for {candidates}); it has "
        f"{sorted(splits)}{folder}."
    )


def dataset_info(
    name: str, data_dir: str | None = None, manual_dir: str | None = None
) -> DatasetInfo:
    """Classes, split names and sizes of the source `name` (preparing it if needed)."""
    if name == "fashion_mnist":
        directory = fashion_mnist_dir(manual_dir)
        if _fashion_files(directory, "train") and _fashion_files(directory, "test"):
            sizes = [len(_load_fashion_arrays(directory, s)[1]) for s in ("train", "test")]
            return DatasetInfo(name, 10, FASHION_MNIST_CLASSES, "train", "test", *sizes)
    builder = _tfds_builder(name, data_dir, manual_dir, None)
    splits = builder.info.splits
    train = _pick(splits, ("train",), name, "training")
    evaluation = _pick(splits, ("validation", "val", "test"), name, "evaluation")
    label_feature = builder.info.features[_features(builder)[1]]
    return DatasetInfo(
        name=name,
        num_classes=label_feature.num_classes,
        class_names=tuple(label_feature.names),
        train_split=train,
        eval_split=evaluation,
        num_train_examples=splits[train].num_examples,
        num_eval_examples=splits[evaluation].num_examples,
    )
