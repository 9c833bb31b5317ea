"""Tiny but real-format input data written by tests: JPEG/PNG files, IDX files, ILSVRC2012 tars."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile

import numpy as np
from PIL import Image

# First synsets of TFDS's imagenet2012 labels.txt (label indices 0 and 1).
SYNSETS = ("n01440764", "n01443537")
# TFDS's shipped validation_labels.txt: the synsets of ILSVRC2012_val_00000001..3 (label indices
# follow labels.txt, so tests look the index up rather than hard-coding it).
VAL_SYNSETS = ("n01751748", "n09193705", "n02105855")


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 image (upsampled noise, so JPEG keeps it close to the original)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((max(2, height // 16), max(2, width // 16), 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def encode(image: np.ndarray, fmt: str = "JPEG", quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(image).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def jpeg_bytes(height: int = 60, width: int = 80, seed: int = 0) -> bytes:
    return encode(smooth_image(height, width, seed))


def corrupt_jpeg_bytes() -> bytes:
    """A JPEG cut in half: a truncated download, the common real-world corruption."""
    data = jpeg_bytes(64, 64, seed=99)
    return data[: len(data) // 2]


def png_bytes(height: int = 50, width: int = 70, seed: int = 1) -> bytes:
    return encode(smooth_image(height, width, seed), "PNG")


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array in the IDX format of MNIST/Fashion-MNIST (gzipped if path ends .gz)."""
    array = np.asarray(array, np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(directory: str, num_train: int = 12, num_test: int = 6) -> dict:
    """Four tiny Fashion-MNIST IDX files; returns the arrays written."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)
        arrays[prefix] = (images, labels)
    return arrays


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_imagenet_tars(directory: str, per_class: int = 3, bad: bool = False) -> None:
    """ILSVRC2012_img_train.tar (a tar of per-synset tars) and ILSVRC2012_img_val.tar.

    With `bad`, the first synset also holds a truncated JPEG and a PNG named .JPEG (as ImageNet's
    real n02105855_2933.JPEG is).
    """
    os.makedirs(directory, exist_ok=True)
    with tarfile.open(os.path.join(directory, "ILSVRC2012_img_train.tar"), "w") as train:
        for c, synset in enumerate(SYNSETS):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as synset_tar:
                for i in range(per_class):
                    data = jpeg_bytes(60 + 10 * i, 80, seed=10 * c + i)
                    _add_bytes(synset_tar, f"{synset}_{i}.JPEG", data)
                if bad and c == 0:
                    _add_bytes(synset_tar, f"{synset}_corrupt.JPEG", corrupt_jpeg_bytes())
                    _add_bytes(synset_tar, f"{synset}_png.JPEG", png_bytes())
            _add_bytes(train, f"{synset}.tar", inner.getvalue())
    with tarfile.open(os.path.join(directory, "ILSVRC2012_img_val.tar"), "w") as val:
        for i in range(len(VAL_SYNSETS)):
            _add_bytes(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg_bytes(70, 50, seed=50 + i))


def write_image_folder(root: str, bad: bool = False) -> None:
    """root/{train,test}/{cat,dog}/*.jpg|png; with `bad`, a truncated .jpg and a PNG named .JPEG."""
    for split, n in (("train", 4), ("test", 2)):
        for c, label in enumerate(("cat", "dog")):
            directory = os.path.join(root, split, label)
            os.makedirs(directory, exist_ok=True)
            for i in range(n):
                data = jpeg_bytes(40, 50 + i, seed=100 * c + i) if i % 2 == 0 else png_bytes(seed=i)
                ext = "jpg" if i % 2 == 0 else "png"
                with open(os.path.join(directory, f"{label}_{i}.{ext}"), "wb") as f:
                    f.write(data)
    if bad:
        with open(os.path.join(root, "train", "cat", "broken.jpg"), "wb") as f:
            f.write(corrupt_jpeg_bytes())
        with open(os.path.join(root, "train", "dog", "really_png.JPEG"), "wb") as f:
            f.write(png_bytes(seed=7))


def prepare_imagenet(root: str, bad: bool = True) -> tuple[str, str]:
    """Writes the miniature tars under root/manual and prepares TFDS's imagenet2012 in root/tfds."""
    from alexnet_keras.data import sources as datasets

    manual_dir, data_dir = os.path.join(root, "manual"), os.path.join(root, "tfds")
    write_imagenet_tars(manual_dir, bad=bad)
    datasets.dataset_info("imagenet2012", data_dir=data_dir, manual_dir=manual_dir)
    return data_dir, manual_dir
