"""tf.data pipelines end to end, from files the tests write."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from fake_data import (
    SYNSETS,
    VAL_SYNSETS,
    prepare_imagenet,
    write_fashion_mnist,
    write_image_folder,
)

from alexnet_keras.data import pipeline
from alexnet_keras.data import sources as datasets


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    return prepare_imagenet(str(tmp_path_factory.mktemp("imagenet")), bad=True)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(datasets, "_network_available", lambda *a, **k: False)


def _label(synset):
    names = open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read().split()
    return names.index(synset)


def _collect(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def test_imagenet_training_batches_and_bad_images(imagenet):
    data_dir, _ = imagenet
    log = pipeline.BadImageLog()
    ds = pipeline.build_dataset(
        "imagenet2012",
        "train",
        batch_size=2,
        training=True,
        data_dir=data_dir,
        seed=3,
        bad_image_log=log,
    )
    assert ds.element_spec[0].shape == (2, 227, 227, 3) and ds.element_spec[1].dtype == tf.int32
    images, labels = _collect(ds)
    # 3 + 3 good JPEGs, the PNG named .JPEG decoded; the truncated JPEG skipped and counted.
    assert images.shape == (6, 227, 227, 3) and images.dtype == np.float32  # 7 -> 3 full batches.
    assert np.isfinite(images).all() and abs(images.mean()) < 60
    assert set(labels) == {_label(s) for s in SYNSETS}
    assert log.count() == 1 and log.keys() == [f"{SYNSETS[0]}_corrupt.JPEG"]
    assert log.log_summary() == 1
    everything = pipeline.build_dataset(
        "imagenet2012",
        "train",
        batch_size=8,
        training=True,
        data_dir=data_dir,
        drop_remainder=False,
        bad_image_log=log,
    )
    labels = _collect(everything)[1]
    assert collections.Counter(labels) == {_label(SYNSETS[0]): 4, _label(SYNSETS[1]): 3}
    assert log.count() == 1  # The same file again is not counted twice.


def test_imagenet_eval_labels_and_ten_crops(imagenet):
    data_dir, _ = imagenet
    ds = pipeline.build_dataset(
        "imagenet2012", "validation", batch_size=2, training=False, data_dir=data_dir
    )
    images, labels = _collect(ds)
    assert images.shape == (3, 227, 227, 3)
    assert sorted(labels) == sorted(_label(s) for s in VAL_SYNSETS)
    ds = pipeline.build_dataset(
        "imagenet2012",
        "validation",
        batch_size=3,
        training=False,
        data_dir=data_dir,
        ten_crop=True,
        image_size=67,
    )
    images, _ = _collect(ds)
    assert images.shape == (3, 10, 67, 67, 3)
    np.testing.assert_array_equal(images[:, 5], images[:, 0, :, ::-1])  # Mirror of a corner.


def test_strict_mode_names_the_bad_file(imagenet):
    data_dir, _ = imagenet
    ds = pipeline.build_dataset(
        "imagenet2012", "train", batch_size=2, training=True, data_dir=data_dir, strict=True
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{SYNSETS[0]}_corrupt.JPEG"):
        _collect(ds)


def test_deterministic_under_a_seed(imagenet):
    data_dir, _ = imagenet

    def run(seed):
        ds = pipeline.build_dataset(
            "imagenet2012",
            "train",
            batch_size=2,
            training=True,
            data_dir=data_dir,
            seed=seed,
            deterministic=True,
            bad_image_log=pipeline.BadImageLog(),
        )
        return _collect(ds)

    (a, la), (b, lb), (c, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_image_folder_with_png_named_jpeg_and_corrupt_file(tmp_path):
    write_image_folder(str(tmp_path), bad=True)
    log = pipeline.BadImageLog()
    ds = pipeline.build_dataset(
        f"folder:{tmp_path}",
        "train",
        batch_size=16,
        training=True,
        drop_remainder=False,
        bad_image_log=log,
        image_size=67,
    )
    images, labels = _collect(ds)
    assert images.shape == (9, 67, 67, 3)  # 8 + really_png.JPEG; broken.jpg skipped.
    assert collections.Counter(labels) == {0: 4, 1: 5}
    assert log.count() == 1 and log.keys()[0].endswith("broken.jpg")


def test_fashion_mnist_grayscale_to_rgb(tmp_path, monkeypatch):
    write_fashion_mnist(str(tmp_path))
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    ds = pipeline.build_dataset(
        "fashion_mnist", "train", batch_size=4, training=True, image_size=67, seed=0
    )
    images, labels = _collect(ds)
    assert images.shape == (12, 67, 67, 3) and sorted(labels) == sorted(np.arange(12) % 10)
    ds = pipeline.build_dataset(
        "fashion_mnist", "test", batch_size=4, training=False, image_size=67, augment=False
    )
    images, labels = _collect(ds)
    assert images.shape == (6, 67, 67, 3) and list(labels) == list(np.arange(6) % 10)
    np.testing.assert_allclose(
        images[..., 0] - images[..., 1],
        np.full((6, 67, 67), -np.subtract(*pipeline.IMAGENET.mean_rgb[:2])),
        atol=1e-3,
    )  # Gray: R and G differ only by the mean.


def test_input_context_shards_and_per_replica_batch(tmp_path, monkeypatch):
    write_fashion_mnist(str(tmp_path), num_train=12)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    seen = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        ds = pipeline.build_dataset(
            "fashion_mnist", "test", batch_size=1, training=False, image_size=67, input_context=ctx
        )
        seen.append(sorted(_collect(ds)[1].tolist()))
    assert len(seen[0]) == len(seen[1]) == 3 and sorted(seen[0] + seen[1]) == list(range(6))

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    global_batch = 4

    def dataset_fn(ctx):
        return pipeline.build_dataset(
            "fashion_mnist",
            "train",
            training=True,
            image_size=67,
            batch_size=ctx.get_per_replica_batch_size(global_batch),
            input_context=ctx,
            seed=1,
        )

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    images, labels = next(iter(dist))
    shapes = [t.shape for t in strategy.experimental_local_results(images)]
    assert shapes == [(2, 67, 67, 3), (2, 67, 67, 3)]


def _raw(images, keys):
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": np.arange(len(images), dtype=np.int32), "key": keys}
    )


def test_runs_of_bad_images_and_a_bad_last_image_are_counted():
    from fake_data import corrupt_jpeg_bytes, jpeg_bytes, png_bytes

    good, bad = jpeg_bytes(), corrupt_jpeg_bytes()
    images = [good, bad, b"not an image at all", png_bytes(), good, bad]
    keys = ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG", "e.JPEG", "f.JPEG"]
    log = pipeline.BadImageLog()
    ds = pipeline.preprocess_examples(
        _raw(images, keys),
        batch_size=8,
        training=True,
        shuffle_buffer=0,
        image_size=67,
        drop_remainder=False,
        bad_image_log=log,
    )
    images_out, labels = _collect(ds)
    assert sorted(labels) == [0, 3, 4]
    assert log.count() == 3
    assert log.keys() == ["c.JPEG", "f.JPEG", "index 1"]  # b.JPEG, first of a run, is unnamed.
    # Strict mode stops at the first gap and names the last file of the failing run.
    with pytest.raises(tf.errors.InvalidArgumentError, match="c.JPEG"):
        _collect(
            pipeline.preprocess_examples(
                _raw(images, keys), batch_size=8, training=False, image_size=67, strict=True
            )
        )


def test_an_endless_dataset_counts_bad_images_without_a_sentinel():
    from fake_data import corrupt_jpeg_bytes, jpeg_bytes, png_bytes

    good, bad = jpeg_bytes(), corrupt_jpeg_bytes()
    images = [good, bad, png_bytes(), good, bad]  # The last one is named by the next pass's first.
    keys = ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG", "e.JPEG"]
    log = pipeline.BadImageLog()
    ds = pipeline.preprocess_examples(
        _raw(images, keys),
        batch_size=3,
        training=True,
        repeat=True,
        shuffle_buffer=0,
        image_size=67,
        bad_image_log=log,
    )
    labels = np.concatenate([y.numpy() for _, y in ds.take(4)])
    assert labels.tolist() == [0, 2, 3] * 4
    assert log.keys() == ["b.JPEG", "e.JPEG"]


def test_strict_mode_names_the_bad_file_wherever_the_shuffle_puts_it():
    # A parallel batch keeps pulling after the first error; the name must not drift to a good file.
    from fake_data import corrupt_jpeg_bytes, jpeg_bytes

    images = [jpeg_bytes(seed=i) for i in range(6)] + [corrupt_jpeg_bytes()]
    keys = [f"good_{i}.JPEG" for i in range(6)] + ["bad.JPEG"]
    for _ in range(25):
        ds = pipeline.preprocess_examples(
            _raw(images, keys), batch_size=2, training=True, image_size=67, strict=True
        )
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[bad.JPEG\]"):
            _collect(ds)
