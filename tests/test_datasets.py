"""Sources by name, from files the tests write (nothing is downloaded)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from fake_data import (
    SYNSETS,
    VAL_SYNSETS,
    prepare_imagenet,
    write_fashion_mnist,
    write_idx,
    write_image_folder,
)

from alexnet_keras.data import sources as datasets


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    return prepare_imagenet(str(tmp_path_factory.mktemp("imagenet")))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The tests must pass with no network: make sure nothing tries to download."""
    monkeypatch.setattr(datasets, "_network_available", lambda *a, **k: False)


def _imagenet_label(synset: str) -> int:
    names = open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read().split()
    return names.index(synset)


def _examples(ds):
    return [{k: v.numpy() for k, v in ex.items()} for ex in ds]


def test_imagenet2012_builder_prepares_the_tars(imagenet):
    data_dir, manual_dir = imagenet
    info = datasets.dataset_info("imagenet2012", data_dir=data_dir)
    assert (info.num_classes, info.train_split, info.eval_split) == (1000, "train", "validation")
    assert info.class_names[:2] == SYNSETS
    assert (info.num_train_examples, info.num_eval_examples) == (8, 3)  # 3 + 3 + 2 bad, 3.
    train = _examples(datasets.load_split("imagenet2012", "train", data_dir=data_dir))
    assert len(train) == 8
    for ex in train:
        assert ex["label"] == _imagenet_label(ex["key"].decode()[:9])
        assert isinstance(ex["image"], bytes)  # Encoded bytes, for the fused JPEG decode.
    val = _examples(datasets.load_split("imagenet2012", "validation", data_dir=data_dir))
    by_name = {ex["key"].decode(): ex["label"] for ex in val}
    assert by_name == {
        f"ILSVRC2012_val_{i + 1:08d}.JPEG": _imagenet_label(s) for i, s in enumerate(VAL_SYNSETS)
    }


def test_imagenet2012_missing_tar_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_split(
            "imagenet2012",
            "train",
            data_dir=str(tmp_path / "tfds"),
            manual_dir=str(tmp_path / "nowhere"),
        )
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and str(tmp_path / "nowhere") in message
    assert "image-net.org" in message


def test_image_folder(tmp_path):
    write_image_folder(str(tmp_path))
    name = f"folder:{tmp_path}"
    info = datasets.dataset_info(name)
    assert info.class_names == ("cat", "dog") and info.eval_split == "test"
    assert (info.num_train_examples, info.num_eval_examples) == (8, 4)
    examples = _examples(datasets.load_split(name, "train"))
    assert len(examples) == 8
    for ex in examples:
        assert info.class_names[ex["label"]] == os.path.basename(
            os.path.dirname(ex["key"].decode())
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_split(f"folder:{tmp_path}/missing", "train")
    with pytest.raises(ValueError, match="no split 'validation'"):
        datasets.load_split(name, "validation")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no training split .* an empty one is none"):
        datasets.dataset_info(f"folder:{empty}")


def test_fashion_mnist_from_tiny_idx_files(tmp_path, monkeypatch):
    arrays = write_fashion_mnist(str(tmp_path))
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    info = datasets.dataset_info("fashion_mnist")
    assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (10, 12, 6)
    assert info.class_names[0] == "T-shirt/top" and info.eval_split == "test"
    test = _examples(datasets.load_split("fashion_mnist", "test"))
    images, labels = arrays["t10k"]
    np.testing.assert_array_equal(np.stack([ex["image"] for ex in test]), images[..., None])
    np.testing.assert_array_equal([ex["label"] for ex in test], labels)


def test_read_idx_checks_the_format(tmp_path):
    path = str(tmp_path / "x-idx1-ubyte")
    write_idx(path, np.arange(5))
    np.testing.assert_array_equal(datasets.read_idx(path), np.arange(5))
    with open(path, "r+b") as f:
        f.write(b"\x01\x02")
    with pytest.raises(ValueError, match="not a uint8 IDX file"):
        datasets.read_idx(path)


@pytest.mark.skipif(
    not os.path.exists(os.path.join(datasets.FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_real_debian_files(monkeypatch):
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
    info = datasets.dataset_info("fashion_mnist")
    assert (info.num_train_examples, info.num_eval_examples) == (60_000, 10_000)
    first = next(iter(datasets.load_split("fashion_mnist", "test")))
    assert first["image"].shape == (28, 28, 1) and int(first["label"]) == 9  # An ankle boot.


def test_fashion_mnist_missing_fails_fast_with_apt_hint(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        datasets.load_split("fashion_mnist", "train", data_dir=str(tmp_path / "tfds"))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset'"):
        datasets.dataset_info("no_such_dataset")
    with pytest.raises(ValueError, match=r"closest: cifar10") as error:
        datasets.dataset_info("cifar11")
    assert len(str(error.value)) < 300  # Not TFDS's list of all its datasets (~8 kB).


def test_compute_stats_on_tiny_fashion_mnist(tmp_path, monkeypatch):
    from alexnet_keras.data import stats

    arrays = write_fashion_mnist(str(tmp_path))
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    result = stats.compute_dataset_stats("fashion_mnist", image_size=67, mean_image_size=4)
    images = arrays["train"][0].astype(np.float64)
    assert result.num_images == 12
    # Bilinear upsampling preserves the mean up to edge effects; gray -> equal channels.
    np.testing.assert_allclose(result.mean_rgb, [images.mean()] * 3, rtol=0.05)
    assert np.asarray(result.mean_image).shape == (4, 4, 3)
    assert result.eigval[0] > 100 * result.eigval[1]  # Gray images: one principal direction.
    stats.save_stats(result, str(tmp_path / "s.json"))
    assert stats.load_stats(str(tmp_path / "s.json")) == result
