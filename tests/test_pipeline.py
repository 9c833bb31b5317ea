"""tf.data pipelines end to end, from files the tests write."""

import collections
import dataclasses

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

from alexnet_keras.data import pipeline, pixels
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


def _distinct(images):
    return len({image.tobytes() for image in images})


def test_imagenet_training_stream_and_bad_images(imagenet):
    """The real TFDS imagenet2012 shards as the endless training stream: every pass is the
    8 examples (3 + 3 JPEGs, a PNG named .JPEG, a truncated JPEG) in a fresh order; the truncated
    one is skipped, counted, and its slot taken by the next good example."""
    data_dir, _ = imagenet
    log = pipeline.BadImageLog()
    ds = pipeline.build_dataset(
        "imagenet2012", "train", batch_size=8, training=True, data_dir=data_dir, seed=3,
        bad_image_log=log,
    )  # fmt: skip
    assert ds.element_spec[0].shape == (8, 227, 227, 3) and ds.element_spec[1].dtype == tf.int32
    passes = [(x.numpy(), y.numpy()) for x, y in ds.take(4)]
    for images, labels in passes:
        assert np.isfinite(images).all() and abs(images.mean()) < 60
        assert _distinct(images) >= 7
        assert set(labels) == {_label(s) for s in SYNSETS}
    stream = np.concatenate([images for images, _ in passes])
    copies = [p for p in range(24) if np.array_equal(stream[p], stream[p + 1])]
    assert len(copies) == 3  # Each pass's bad slot holds a copy of the next good example.
    assert log.count() == 1 and log.keys() == [f"{SYNSETS[0]}_corrupt.JPEG"]
    assert log.log_summary() == 1
    assert not np.array_equal(passes[0][1], passes[1][1]) or not np.array_equal(
        passes[1][1], passes[2][1]
    )  # Passes are reshuffled.
    once = pipeline.build_dataset(
        "imagenet2012", "train", batch_size=8, training=False, data_dir=data_dir,
        bad_image_log=log,
    )  # fmt: skip
    labels = _collect(once)[1]  # Evaluation mode: one pass in stored order, the bad one skipped.
    assert collections.Counter(labels) == {_label(SYNSETS[0]): 4, _label(SYNSETS[1]): 3}
    assert log.count() == 1  # The same file again is not counted twice.


def test_training_stream_restarts_where_it_stopped(imagenet, tmp_path, monkeypatch):
    """Batches from position p of the stream equal the uninterrupted stream's batches after p:
    for TFDS shards, an image folder and in-memory arrays (the resume of a killed run)."""
    data_dir, _ = imagenet
    write_image_folder(str(tmp_path / "folder"))
    write_fashion_mnist(str(tmp_path / "fashion"))
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "fashion"))
    for name, extra in (("imagenet2012", {"data_dir": data_dir}),
                        (f"folder:{tmp_path / 'folder'}", {}), ("fashion_mnist", {})):  # fmt: skip

        def batches(start, count, name=name, extra=extra):
            ds = pipeline.build_dataset(
                name, "train", batch_size=2, training=True, image_size=67, seed=9,
                start=start, bad_image_log=pipeline.BadImageLog(), **extra,
            )  # fmt: skip
            return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]

        whole, resumed = batches(0, 9), batches(6, 6)  # Position 6: three steps of 2 in.
        for (a, la), (b, lb) in zip(whole[3:], resumed, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
            np.testing.assert_array_equal(la, lb, err_msg=name)


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


def test_streams_end_ordered_with_the_autotuner_off(imagenet):
    """Every stream a run reads, training and evaluation: in order, and without tf.data's
    autotuner (freeing an autotuned iterator left each fit's end idle for up to a minute)."""
    data_dir, _ = imagenet
    for training in (True, False):
        ds = pipeline.build_dataset(
            "imagenet2012", "validation", batch_size=2, training=training, data_dir=data_dir,
            bad_image_log=pipeline.BadImageLog(),
        )  # fmt: skip
        options = ds.options()
        assert options.autotune.enabled is False and options.deterministic is True


def test_deterministic_under_a_seed(imagenet):
    data_dir, _ = imagenet

    def run(seed):
        ds = pipeline.build_dataset(
            "imagenet2012", "train", batch_size=2, training=True, data_dir=data_dir, seed=seed,
            bad_image_log=pipeline.BadImageLog(),
        )  # fmt: skip
        return _collect(ds.take(8))

    (a, la), (b, lb), (c, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("augment", [True, False])
def test_uint8_pixels_are_the_float32_stream_rounded(imagenet, augment):
    """--input_dtype=uint8 sends each crop as uint8 with its RGB shift (minus the mean, plus the
    lighting); the device's cast and add give the float32 stream's images to within rounding
    (0.5), the same labels, and the shifts carry the lighting draws (they differ per image)."""
    data_dir, _ = imagenet

    def stream(uint8_pixels):
        return pipeline.build_dataset(
            "imagenet2012", "train", batch_size=4, training=True, data_dir=data_dir, seed=5,
            bad_image_log=pipeline.BadImageLog(), augment=augment, uint8_pixels=uint8_pixels,
        ).take(3)  # fmt: skip

    for (images, labels), ((crops, shifts), crop_labels) in zip(stream(False), stream(True)):
        assert crops.dtype == tf.uint8 and shifts.shape == (4, 3)
        np.testing.assert_array_equal(crop_labels, labels)
        finished = pixels.shift_batch(crops, shifts).numpy()
        error = np.abs(finished - images.numpy())
        assert error.max() <= 0.5 + 1e-3 and error.mean() > 0.05  # Rounded, not equal.
        reference = crops.numpy().astype(np.float32) + shifts.numpy()[:, None, None, :]
        np.testing.assert_array_equal(finished, reference)
        mean = -np.asarray(pipeline.IMAGENET.mean_rgb, np.float32)
        if augment:
            assert np.abs(shifts.numpy() - mean).min(axis=1).max() > 0  # Lighting drawn.
        else:
            np.testing.assert_array_equal(shifts.numpy(), np.tile(mean, (4, 1)))


def test_uint8_pixels_refuse_a_mean_image_and_evaluation(tmp_path):
    write_image_folder(str(tmp_path))
    mean_image = dataclasses.replace(pipeline.IMAGENET, mean_image=((pipeline.IMAGENET.mean_rgb,),))
    with pytest.raises(ValueError, match="uint8_pixels needs a per-channel mean"):
        pipeline.build_dataset(f"folder:{tmp_path}", "train", batch_size=2, training=True,
                               stats=mean_image, uint8_pixels=True, image_size=67)  # fmt: skip
    with pytest.raises(ValueError, match="uint8_pixels is a training mode"):
        pipeline.build_dataset(f"folder:{tmp_path}", "train", batch_size=2, training=False,
                               uint8_pixels=True, image_size=67)  # fmt: skip


def test_image_folder_with_png_named_jpeg_and_corrupt_file(tmp_path):
    """Seeded: the filler depends on where the shuffle puts broken.jpg (unseeded, this test once
    saw 10 distinct images). Seed 2 puts it mid-pass, seed 1 last in the pass."""
    write_image_folder(str(tmp_path), bad=True)

    def train_images(seed, log, batches):
        return _collect(pipeline.build_dataset(
            f"folder:{tmp_path}", "train", batch_size=10, training=True, bad_image_log=log,
            image_size=67, seed=seed,
        ).take(batches))[0]  # fmt: skip

    log = pipeline.BadImageLog()
    images = train_images(2, log, batches=1)  # One pass of the 10 files.
    assert images.shape == (10, 67, 67, 3)
    assert _distinct(images) == 9  # 8 + really_png.JPEG; broken.jpg's slot is a copy
    repeats = [i for i in range(9) if images[i].tobytes() == images[i + 1].tobytes()]
    assert len(repeats) == 1  # of the example after it.
    assert log.count() == 1 and log.keys()[0].endswith("broken.jpg")
    images = train_images(1, pipeline.BadImageLog(), batches=2)  # Last: the next pass's first.
    assert _distinct(images[:10]) == 10 and images[9].tobytes() == images[10].tobytes()
    labels = _collect(pipeline.build_dataset(
        f"folder:{tmp_path}", "train", batch_size=16, training=False, bad_image_log=log,
        image_size=67,
    ))[1]  # fmt: skip
    assert collections.Counter(labels) == {0: 4, 1: 5}


def test_fashion_mnist_grayscale_to_rgb(tmp_path, monkeypatch):
    write_fashion_mnist(str(tmp_path))
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    ds = pipeline.build_dataset(
        "fashion_mnist", "train", batch_size=4, training=True, image_size=67, seed=0
    )
    images, labels = _collect(ds.take(3))  # One pass: a permutation of the 12 images.
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
        image_size=67,
        drop_remainder=False,
        bad_image_log=log,
    )
    images_out, labels = _collect(ds)
    assert sorted(labels) == [0, 3, 4]
    assert log.count() == 3
    assert log.keys() == ["c.JPEG", "f.JPEG", "index 1"]  # b.JPEG, first of a run, is unnamed.


def test_an_endless_dataset_fills_bad_images_slots_without_a_sentinel():
    """In the endless training stream a bad image's slot is taken by the next good one, so every
    pass keeps its length (a step always consumes its positions: exact resume)."""
    from fake_data import corrupt_jpeg_bytes, jpeg_bytes, png_bytes

    good, bad = jpeg_bytes(), corrupt_jpeg_bytes()
    images = [good, bad, png_bytes(), good, bad]  # The last one is named by the next pass's first.
    keys = ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG", "e.JPEG"]
    log = pipeline.BadImageLog()
    ds = pipeline.preprocess_examples(
        _raw(images, keys),
        batch_size=5,
        training=True,
        repeat=True,
        image_size=67,
        bad_image_log=log,
    )
    labels = np.concatenate([y.numpy() for _, y in ds.take(3)])
    # b -> c's copy, e -> the next pass's a: 5 examples a pass, labels by position.
    assert labels.tolist() == [0, 2, 2, 3, 0] * 3
    assert log.keys() == ["b.JPEG", "e.JPEG"]


@pytest.mark.slow
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


_FIRST_BAD_CASES = {
    # name: (the examples in stored order, "good"/"bad"/"junk"), the first bad one is "first"
    "bad_images_apart": ["good", "first", "good", "good", "bad", "good", "junk", "good"],
    "the_very_first_example": ["first", "good", "bad", "good"],
    "the_last_example_only_bad": ["good", "good", "first"],
    "a_run_of_two": ["good", "first", "junk", "good", "bad", "good"],
}


@pytest.mark.parametrize("layout", _FIRST_BAD_CASES.values(), ids=_FIRST_BAD_CASES.keys())
def test_strict_mode_stops_at_the_first_bad_image_in_order(layout):
    """--strict_data is documented to stop at the FIRST undecodable image: the error must name it
    (and its index), whatever bad images follow. Evaluation order, 2 per batch, 5 tries."""
    from fake_data import corrupt_jpeg_bytes, jpeg_bytes

    data = {"bad": corrupt_jpeg_bytes(), "first": corrupt_jpeg_bytes(), "junk": b"not an image"}
    images = [data.get(kind) or jpeg_bytes(seed=i) for i, kind in enumerate(layout)]
    keys = [f"{kind}_{i}.JPEG" for i, kind in enumerate(layout)]
    first = layout.index("first")
    for _ in range(5):  # The parallel map and batch keep pulling after the error.
        ds = pipeline.preprocess_examples(
            _raw(images, keys), batch_size=2, training=False, image_size=67, strict=True
        )
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            _collect(ds)
        message = error.value.message
        assert f"[{keys[first]}]" in message and f"[{first}]" in message, message


def test_evaluation_ten_crops_are_the_papers_windows_of_the_256_square():
    """build_dataset/preprocess_examples(ten_crop=True): the 4 corner and the centre 227 windows
    of the 256x256 square (shorter side 256, centre square, minus the mean), then their mirrors.

    test_preprocessing.py checks `geometry.ten_crops` on a given square; this checks what the
    evaluation pipeline feeds it, and that its crop 4 is the centre-crop evaluation's input.
    """
    from fake_data import encode, smooth_image

    from alexnet_keras.data import geometry, pixels

    jpegs = [encode(smooth_image(300, 400, seed=8)), encode(smooth_image(260, 256, seed=9))]
    raw = _raw(jpegs, ["wide.jpg", "tall.jpg"])
    ten, _ = _collect(
        pipeline.preprocess_examples(raw, batch_size=2, training=False, ten_crop=True)
    )
    centre, _ = _collect(pipeline.preprocess_examples(raw, batch_size=2, training=False))
    assert ten.shape == (2, 10, 227, 227, 3)
    mean = np.asarray(pipeline.IMAGENET.mean_rgb, np.float32)
    far, mid = 256 - 227, (256 - 227) // 2  # Offsets of the far corners and of the centre.
    for i, data in enumerate(jpegs):
        square = geometry.resize_shorter_and_center_crop(pixels.decode_image(data), 256)
        square = square.numpy() - mean
        windows = [
            square[y : y + 227, x : x + 227]
            for y, x in [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
        ]
        expected = np.stack(windows + [w[:, ::-1] for w in windows])
        np.testing.assert_allclose(ten[i], expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(ten[:, 4], centre)
    assert len({crop.tobytes() for crop in ten[0]}) == 10  # Ten distinct crops.
