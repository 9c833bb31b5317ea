"""Preprocessing functions: NumPy references, eager == Dataset.map, and the paper's geometry."""

import json

import numpy as np
import pytest
import tensorflow as tf
from fake_data import encode, jpeg_bytes, png_bytes, smooth_image

from alexnet_keras.data import geometry, pixels, preprocessing
from alexnet_keras.data import stats as stats_lib

SEED = tf.constant([7, 11], tf.int64)
STATS = stats_lib.IMAGENET


def _in_map(fn, *args):
    """fn(*args) run inside tf.data.Dataset.map (graph mode, tf.data's own threads)."""
    ds = tf.data.Dataset.from_tensors(tuple(tf.convert_to_tensor(a) for a in args)).map(fn)
    return tf.nest.map_structure(lambda t: t.numpy(), ds.get_single_element())


def _eager(fn, *args):
    return tf.nest.map_structure(
        lambda t: np.asarray(t), fn(*(tf.convert_to_tensor(a) for a in args))
    )


IMAGE = smooth_image(300, 400, seed=3)
CASES = {
    "decode_jpeg": (pixels.decode_image, tf.constant(jpeg_bytes(30, 40))),
    "decode_png": (pixels.decode_image, tf.constant(png_bytes())),
    "resize_shorter_and_center_crop": (
        lambda x: geometry.resize_shorter_and_center_crop(x, 256),
        IMAGE,
    ),
    "random_crop": (lambda x: geometry.random_crop(x, 227, seed=SEED), IMAGE),
    "random_flip": (lambda x: geometry.random_flip(x, seed=SEED), IMAGE),
    "pca_lighting": (
        lambda x: pixels.pca_lighting(x, STATS.eigval, STATS.eigvec, seed=SEED),
        IMAGE,
    ),
    "center_crop": (lambda x: geometry.center_crop(x, 227), IMAGE),
    "ten_crops": (lambda x: geometry.ten_crops(x, 227), IMAGE[:256, :256]),
    "normalize": (lambda x: preprocessing.normalize(x, STATS), IMAGE),
    "add_per_channel": (lambda x: pixels.add_per_channel(x, [1.5, -2.0, 3.25]), IMAGE),
    "eval": (lambda x: preprocessing.preprocess_for_eval(x, STATS), IMAGE),
    "eval_ten_crop": (lambda x: preprocessing.preprocess_for_eval(x, STATS, ten_crop=True), IMAGE),
    "train_decoded": (lambda x: preprocessing.preprocess_for_train(x, STATS, seed=SEED), IMAGE),
    "train_jpeg": (
        lambda x: preprocessing.preprocess_for_train(x, STATS, seed=SEED),
        tf.constant(encode(IMAGE)),
    ),
    "train_png": (
        lambda x: preprocessing.preprocess_for_train(x, STATS, seed=SEED),
        tf.constant(encode(IMAGE, "PNG")),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_equals_dataset_map(name):
    fn, arg = CASES[name]
    np.testing.assert_allclose(_eager(fn, arg), _in_map(fn, arg), rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 5, 7, 3), (4, 6, 1)])
def test_add_per_channel_is_a_broadcast_add(shape):
    image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    shift = np.array([-7.5, 2.0, 0.25][: shape[-1]], np.float32)
    expected = image + shift
    np.testing.assert_array_equal(pixels.add_per_channel(image, shift), expected)
    unknown = tf.TensorSpec([None] * len(shape), tf.float32)  # Dynamic shapes, as in tf.data.
    traced = tf.function(lambda x: pixels.add_per_channel(x, shift), input_signature=[unknown])
    np.testing.assert_array_equal(traced(image), expected)


def test_decode_grayscale_and_png_named_anything():
    gray = encode(smooth_image(20, 30)[..., 0])
    image = pixels.decode_image(tf.constant(gray))
    assert image.shape == (20, 30, 3) and image.dtype == tf.uint8
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert pixels.decode_image(tf.constant(png_bytes(50, 70))).shape == (50, 70, 3)


def test_resize_shorter_and_center_crop_geometry():
    # 300x400 -> shorter side 256 -> 256x341, centre 256 square: columns 42..298.
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = 255  # Right half white: the centre crop is half white too.
    out = geometry.resize_shorter_and_center_crop(image, 256).numpy()
    assert out.shape == (256, 256, 3) and out.dtype == np.float32
    assert out[:, :120].max() < 1 and out[:, 140:].min() > 254
    assert geometry.default_resize_size(227) == 256 and geometry.default_resize_size(67) == 76


@pytest.mark.parametrize("seed", range(20))
def test_random_crop_lies_inside_and_matches_slice(seed):
    image = np.arange(40 * 50 * 3, dtype=np.float32).reshape(40, 50, 3)
    crop = geometry.random_crop(image, 17, seed=[seed, 0]).numpy()
    top, left = (int(v) for v in geometry.random_crop_offset(40, 50, 17, seed=[seed, 0]))
    assert 0 <= top <= 40 - 17 and 0 <= left <= 50 - 17
    np.testing.assert_array_equal(crop, image[top : top + 17, left : left + 17])


def test_random_crop_covers_all_offsets():
    offsets = {
        tuple(int(v) for v in geometry.random_crop_offset(5, 5, 3, seed=[s, 1])) for s in range(200)
    }
    assert offsets == {(y, x) for y in range(3) for x in range(3)}


def test_flips_about_half_the_time():
    image = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    flips = 0
    for s in range(400):
        out = geometry.random_flip(image, seed=[s, 2]).numpy()
        if np.array_equal(out, image[:, ::-1]):
            flips += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 160 <= flips <= 240  # Binomial(400, 0.5): mean 200, sd 10.


def test_lighting_adds_exactly_eigvec_alpha_eigval():
    image = np.asarray(IMAGE[:20, :30], np.float32)
    out = pixels.pca_lighting(image, STATS.eigval, STATS.eigvec, alpha_std=0.1, seed=SEED).numpy()
    alpha = pixels.sample_lighting_alpha(0.1, seed=SEED).numpy()
    expected_shift = np.asarray(STATS.eigvec) @ (alpha * np.asarray(STATS.eigval))
    np.testing.assert_allclose(out - image, np.broadcast_to(expected_shift, out.shape), atol=1e-4)
    assert np.abs(expected_shift).max() > 0  # A real draw, not alpha = 0.


def test_lighting_alpha_distribution():
    alphas = np.stack([pixels.sample_lighting_alpha(0.1, seed=[s, 3]).numpy() for s in range(300)])
    assert abs(alphas.mean()) < 0.02 and 0.08 < alphas.std() < 0.12


def test_ten_crops_are_the_paper_windows():
    image = np.random.default_rng(0).random((256, 256, 3)).astype(np.float32)
    crops = geometry.ten_crops(image, 227).numpy()
    c, m = 256 - 227, (256 - 227) // 2
    windows = [
        image[:227, :227],
        image[:227, c:],
        image[c:, :227],
        image[c:, c:],
        image[m : m + 227, m : m + 227],
    ]
    expected = np.stack(windows + [w[:, ::-1] for w in windows])
    np.testing.assert_array_equal(crops, expected)


def test_normalize_per_channel_and_mean_image():
    image = np.full((227, 227, 3), 100.0, np.float32)
    np.testing.assert_allclose(
        preprocessing.normalize(image, STATS)[0, 0], 100.0 - np.asarray(STATS.mean_rgb), rtol=1e-6
    )
    # A 4x4 mean image whose value is its column index: resized to 256, cropped where the image is.
    ramp = np.tile(np.arange(4, dtype=np.float32)[None, :, None], (4, 1, 3)) * 10
    stats = stats_lib.DatasetStats(
        (0, 0, 0), (1, 1, 1), np.eye(3).tolist(), mean_image=ramp.tolist()
    )
    left = preprocessing.normalize(image, stats, offset=(0, 0), resize_size=256).numpy()
    right = preprocessing.normalize(image, stats, offset=(29, 29), resize_size=256).numpy()
    assert left[0, 0, 0] > right[0, -1, 0]  # Left window subtracts less of the ramp.
    assert preprocessing.normalize(image, stats.per_channel()).numpy()[0, 0, 0] == 100.0


def test_fused_jpeg_crop_matches_decode_then_crop():
    # A very smooth image, so that the fused path's sub-pixel rounding of the window shows as a
    # small difference while a window shifted by a few pixels shows as a large one.
    smooth = np.asarray(tf.image.resize(smooth_image(64, 80, seed=4), [300, 400])).astype(np.uint8)
    data = tf.constant(encode(smooth, quality=98))
    decoded = pixels.decode_image(data)
    for s in range(5):
        fused, off1 = geometry.decode_and_random_crop(data, 227, 256, seed=[s, 5])
        ref, off2 = geometry.random_square_crop(decoded, 227, 256, seed=[s, 5])
        assert [int(v) for v in off1] == [int(v) for v in off2]
        square = geometry.resize_shorter_and_center_crop(decoded, 256).numpy()
        top, left = (int(v) for v in off2)
        np.testing.assert_array_equal(ref, square[top : top + 227, left : left + 227])
        shifted = square[top : top + 227, (left + 8) % 29 : (left + 8) % 29 + 227]
        error = np.abs(fused.numpy() - ref.numpy()).mean()
        assert error < 1.5 and error < 0.5 * np.abs(shifted - ref.numpy()).mean()


def test_train_and_eval_outputs():
    train = preprocessing.preprocess_for_train(tf.constant(encode(IMAGE)), STATS, seed=SEED)
    assert train.shape == (227, 227, 3) and train.dtype == tf.float32
    assert abs(float(tf.reduce_mean(train))) < 60  # Mean subtracted.
    again = preprocessing.preprocess_for_train(tf.constant(encode(IMAGE)), STATS, seed=SEED)
    np.testing.assert_array_equal(train, again)  # Seeded: reproducible.
    small = preprocessing.preprocess_for_eval(np.zeros((28, 28, 1), np.uint8), STATS, image_size=67)
    assert small.shape == (67, 67, 3)
    np.testing.assert_allclose(small[0, 0], -np.asarray(STATS.mean_rgb), rtol=1e-6)


def test_stats_json_round_trip_and_accumulator(tmp_path):
    path = str(tmp_path / "stats.json")
    stats_lib.save_stats(STATS, path)
    assert stats_lib.load_stats(path) == STATS
    assert json.load(open(path))["eigval"][0] == pytest.approx(0.2175 * 255)
    assert stats_lib.load_stats(None) is STATS
    with pytest.raises(FileNotFoundError, match="compute_stats"):
        stats_lib.load_stats(str(tmp_path / "missing.json"))
    rng = np.random.default_rng(0)
    images = [rng.normal(120, 30, (8, 9, 3)) for _ in range(5)]
    acc = stats_lib.StatsAccumulator()
    for image in images:
        acc.update(image, small_image=image[:2, :2])
    result = acc.result("test")
    pixels = np.concatenate([im.reshape(-1, 3) for im in images])
    np.testing.assert_allclose(result.mean_rgb, pixels.mean(0), rtol=1e-6)
    cov = np.cov(pixels.T, bias=True) / 255.0**2
    vec = np.asarray(result.eigvec)
    np.testing.assert_allclose(cov @ vec, vec * (np.asarray(result.eigval) / 255), atol=1e-8)
    assert result.eigval[0] >= result.eigval[1] >= result.eigval[2]
    assert np.asarray(result.mean_image).shape == (2, 2, 3)
    assert stats_lib.DatasetStats.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.parametrize("with_mean_image", [False, True])
def test_train_equals_composition_of_the_steps(with_mean_image):
    stats = STATS
    if with_mean_image:
        ramp = np.linspace(0, 200, 4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
        stats = stats_lib.DatasetStats(STATS.mean_rgb, STATS.eigval, STATS.eigvec, ramp.tolist())
    for s in range(4):
        seed = tf.constant([s, 9], tf.int64)
        out = preprocessing.preprocess_for_train(IMAGE, stats, seed=seed)
        crop_seed, flip_seed, light_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3)
        )
        crop, offset = geometry.random_square_crop(IMAGE, 227, 256, crop_seed)
        expected = preprocessing.normalize(crop, stats, offset=offset, resize_size=256)
        expected = geometry.random_flip(expected, flip_seed)
        expected = pixels.pca_lighting(expected, stats.eigval, stats.eigvec, 0.1, light_seed)
        np.testing.assert_allclose(out, expected, atol=1e-3)


def test_images_stored_at_256_are_cropped_without_resizing():
    data = tf.constant(encode(smooth_image(256, 341, seed=5)))
    decoded = pixels.decode_image(data).numpy().astype(np.float32)
    for s in range(3):
        crop, (top, left) = geometry.decode_and_random_crop(data, 227, 256, seed=[s, 6])
        top, left = int(top), int(left) + (341 - 256) // 2
        expected = decoded[top : top + 227, left : left + 227]
        # Exact but for the last column, where libjpeg's chroma upsampling sees the crop edge.
        np.testing.assert_array_equal(crop[:, :-1], expected[:, :-1])
        assert np.abs(crop[:, -1] - expected[:, -1]).mean() < 2
