"""fc6-fc8 and their dropout: Dense and GroupedDense against keras.layers.Dense and a NumPy
evaluation per column; ColumnDropout's two forms (the paper's Sec. 4.2 and the inverted one)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_keras.layers import ColumnDropout, Dense, GroupedDense


def _random_weights(layer, shape, rng):
    layer.build(shape)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    return layer


def _keras_file_round_trip(model, path, x):
    model.save(path)
    reloaded = keras.saving.load_model(path)
    for ours, theirs in zip(model.layers, reloaded.layers, strict=True):
        assert ours.get_config() == theirs.get_config()
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())


# Dense: Keras's layer for 2D inputs, kept for files saved by 0.1.


@pytest.mark.parametrize("activation", [None, "relu"])
def test_dense_matches_keras_dense_forward_and_gradients(activation):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(5, 37)), tf.float32)
    ours, ref = Dense(11, activation=activation), keras.layers.Dense(11, activation=activation)
    ours.build(x.shape), ref.build(x.shape)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.normal(size=a.shape).astype(np.float32)
        a.assign(value), b.assign(value)
    upstream = tf.constant(rng.normal(size=(5, 11)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss_ours = tf.reduce_sum(ours(x) * upstream)
        loss_ref = tf.reduce_sum(ref(x) * upstream)
    np.testing.assert_allclose(loss_ours.numpy(), loss_ref.numpy(), rtol=1e-5)
    for g_ours, g_ref in zip(
        tape.gradient(loss_ours, [x, *ours.trainable_weights]),
        tape.gradient(loss_ref, [x, *ref.trainable_weights]),
        strict=True,
    ):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer_class", [Dense, GroupedDense])
def test_bfloat16_policy_computes_in_bfloat16_with_float32_weights(layer_class):
    layer = layer_class(4, dtype="mixed_bfloat16")
    out = layer(tf.ones((2, 3)))
    assert out.dtype == tf.bfloat16 and all(w.dtype == "float32" for w in layer.weights)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(tf.ones((2, 3))), tf.float32))
    assert all(g.dtype == tf.float32 for g in tape.gradient(loss, layer.trainable_weights))


def test_dense_config_round_trip_and_rank_check():
    layer = Dense(7, activation="relu", name="fc6")
    assert Dense.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="2D inputs"):
        Dense(3)(tf.zeros((2, 4, 5)))


# GroupedDense: fc6-fc8 split by output units into columns, each unit reading every input.


def numpy_grouped_dense(x, kernels, biases, relu):
    """Column g: flat(x) @ kernel_g + bias_g (ReLU'd); the columns concatenated, in float64."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    outs = [flat @ k.astype(np.float64) + b for k, b in zip(kernels, biases, strict=True)]
    y = np.concatenate(outs, axis=-1)
    return np.maximum(y, 0.0) if relu else y


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize(
    "groups,units,column_units", [(1, 7, [7]), (2, 8, [4, 4]), (3, 7, [3, 2, 2])]
)
@pytest.mark.parametrize("shape", [(3, 20), (3, 2, 2, 5)])  # fc7's input; pool5's maps (flattened).
def test_grouped_dense_matches_numpy_per_column(shape, groups, units, column_units, activation):
    rng = np.random.default_rng(groups * 10 + len(shape))
    x = rng.normal(size=shape).astype(np.float32)
    layer = _random_weights(GroupedDense(units, groups, activation=activation), shape, rng)
    assert layer.column_units == column_units
    assert [k.shape for k in layer.kernels] == [(20, u) for u in column_units]
    assert [b.shape for b in layer.biases] == [(u,) for u in column_units]
    expected = numpy_grouped_dense(
        x, [k.numpy() for k in layer.kernels], [b.numpy() for b in layer.biases], activation
    )
    for fn in (layer, tf.function(layer)):  # Eager and traced; float32 sums, so not bit-for-bit.
        out = fn(x).numpy()
        assert out.shape == expected.shape == layer.compute_output_shape(shape)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_grouped_dense_equals_keras_dense_with_concatenated_kernels(groups):
    """Forward and every gradient: the columns' kernels side by side are one Flatten + Dense."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(4, 3, 3, 4)), tf.float32)
    ours = _random_weights(GroupedDense(6, groups, activation="relu"), x.shape, rng)
    ref = keras.layers.Dense(6, activation="relu")
    ref.build((None, 36))
    ref.set_weights(
        [np.concatenate([k.numpy() for k in ours.kernels], axis=-1)]
        + [np.concatenate([b.numpy() for b in ours.biases])]
    )
    upstream = tf.constant(rng.normal(size=(4, 6)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_ref = ours(x), ref(tf.reshape(x, (4, 36)))
        loss_ours, loss_ref = tf.reduce_sum(y_ours * upstream), tf.reduce_sum(y_ref * upstream)
    np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    grad_x, *grad_columns = tape.gradient(loss_ours, [x, *ours.kernels, *ours.biases])
    ref_x, ref_kernel, ref_bias = tape.gradient(loss_ref, [x, ref.kernel, ref.bias])
    np.testing.assert_allclose(grad_x.numpy(), ref_x.numpy(), rtol=1e-5, atol=1e-5)
    split = np.cumsum(ours.column_units)[:-1]
    expected = np.split(ref_kernel.numpy(), split, axis=-1) + np.split(ref_bias.numpy(), split)
    for g_ours, g_ref in zip(grad_columns, expected, strict=True):
        np.testing.assert_allclose(g_ours.numpy(), g_ref, rtol=1e-5, atol=1e-5)


def test_grouped_dense_weight_names_and_count():
    layer = GroupedDense(10, groups=2, name="fc8")
    layer.build((None, 2, 2, 6))
    assert [w.path for w in layer.weights] == [
        "fc8/kernel_0",
        "fc8/bias_0",
        "fc8/kernel_1",
        "fc8/bias_1",
    ]
    assert layer.count_params() == 24 * 10 + 10
    one = GroupedDense(10, groups=1, use_bias=False, name="fc")
    one.build((None, 24))
    assert [w.path for w in one.weights] == ["fc/kernel"] and not one.biases


def test_grouped_dense_config_json_and_keras_file_with_dropout(tmp_path):
    """fc6 -> drop6 (paper form) -> fc8, saved and reloaded; inference outputs are equal."""
    fc6 = GroupedDense(
        6, 2, activation="relu", kernel_initializer=keras.initializers.RandomNormal(0, 0.5, seed=1),
        bias_initializer="ones", kernel_regularizer=keras.regularizers.L2(5e-4), name="fc6",
    )  # fmt: skip
    config = fc6.get_config()
    assert {k: config[k] for k in ("units", "groups", "activation", "use_bias")} == dict(
        units=6, groups=2, activation="relu", use_bias=True
    )
    assert "devices" not in config and "merge_columns" not in config
    assert GroupedDense.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(fc6)))
    )
    assert isinstance(revived, GroupedDense) and revived.get_config() == config
    inputs = keras.Input((3, 3, 4))
    x = ColumnDropout(0.5, form="paper", name="drop6")(fc6(inputs))
    model = keras.Model(inputs, GroupedDense(5, 2, name="fc8")(x))
    images = np.random.default_rng(2).normal(size=(2, 3, 3, 4)).astype(np.float32)
    _keras_file_round_trip(model, tmp_path / "fc.keras", images)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(units=0), "Received: units=0"),
        (dict(units=4, groups=0), "Received: groups=0, units=4"),
        (dict(units=4, groups=5), "Received: groups=5, units=4"),
        (dict(units=4, groups=2, devices=["/cpu:0"]), r"per group \(2\)"),
    ],
)
def test_grouped_dense_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupedDense(**kwargs)


def test_grouped_dense_needs_a_known_input_size():
    with pytest.raises(ValueError, match=r"known input size. Received: \(None, None, 4\)"):
        GroupedDense(4).build((None, None, 4))


# ColumnDropout: "paper" zeroes units while training and scales by 1 - rate at test time;
# "inverted" (Keras, Caffe, torch) scales the kept units by 1 / (1 - rate) while training.

FORMS = ["paper", "inverted"]


def _units(shape=(200, 100), seed=0):
    """Positive inputs, so a zero output is a dropped unit."""
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape).astype(np.float32)


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("rate", [0.5, 0.2])
@pytest.mark.parametrize("form", FORMS)
def test_dropout_while_training(form, rate, traced):
    x = _units()
    layer = ColumnDropout(rate, form=form, seed=3)

    def step(x):
        return layer(x, training=True)

    step = tf.function(step) if traced else step
    outputs = [step(x).numpy() for _ in range(2)]
    for y in outputs:
        kept = y != 0
        # Seeded; for 20,000 units 0.02 is more than 5 standard deviations of the fraction.
        assert abs(1 - kept.mean() - rate) < 0.02
        scale = np.float32(1.0) if form == "paper" else np.float32(1 - rate)
        np.testing.assert_allclose(y[kept], x[kept] / scale, rtol=1e-6)
        if form == "paper":
            np.testing.assert_array_equal(y[kept], x[kept])  # Unchanged, bit for bit.
    assert not np.array_equal(outputs[0] != 0, outputs[1] != 0)  # A fresh mask each step.


def test_dropout_forms_with_one_seed_drop_the_same_units():
    x = _units((50, 40))
    paper = ColumnDropout(0.5, form="paper", seed=7)(x, training=True).numpy()
    inverted = ColumnDropout(0.5, form="inverted", seed=7)(x, training=True).numpy()
    np.testing.assert_array_equal(paper != 0, inverted != 0)
    np.testing.assert_array_equal(inverted, 2 * paper)


@pytest.mark.parametrize("form,scale", [("paper", 1.0), ("inverted", 1 / 0.75)])
def test_dropout_masked_and_its_gradient(form, scale):
    """A given mask (rate 0.25): kept units unchanged (paper) or divided by 0.75 (inverted), the
    rest 0; the input gradient is the same map."""
    x = tf.constant(_units((6, 5)))
    keep = np.random.default_rng(1).uniform(size=(6, 5)) < 0.5
    layer = ColumnDropout(0.25, form=form)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer.masked(x, tf.constant(keep))
    np.testing.assert_allclose(y.numpy(), np.where(keep, x.numpy() * scale, 0.0), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), keep * scale, rtol=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_dropout_at_test_time(form):
    """Sec. 4.2: "At test time, we use all the neurons but multiply their outputs by 0.5"."""
    x = _units((4, 6))
    layer = ColumnDropout(0.5, form=form)
    expected = 0.5 * x if form == "paper" else x
    for y in (layer(x), layer(x, training=False), tf.function(layer)(x), layer.at_test_time(x)):
        np.testing.assert_array_equal(np.asarray(y), expected)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layer(inputs))
    np.testing.assert_array_equal(model(x).numpy(), expected)  # Keras's inference default.
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)


@pytest.mark.parametrize("form", FORMS)
def test_dropout_rate_0_is_the_identity(form):
    x = _units((4, 6))
    layer = ColumnDropout(0.0, form=form)
    for training in (False, True):
        np.testing.assert_array_equal(layer(x, training=training).numpy(), x)


def test_dropout_keeps_the_dtype(mixed_policy):
    mixed_policy("mixed_bfloat16")
    layer = ColumnDropout(0.5, form="paper", seed=1)
    x = tf.cast(_units((8, 8)), tf.bfloat16)
    assert layer(x).dtype == layer(x, training=True).dtype == tf.bfloat16


@pytest.mark.parametrize("form", FORMS)
def test_dropout_config_json_and_keras_file(tmp_path, form):
    layer = ColumnDropout(0.4, form=form, seed=5, name="drop6")
    config = layer.get_config()
    assert (config["rate"], config["form"], config["seed"]) == (0.4, form, 5)
    assert "devices" not in config and "fast_call" not in config
    assert ColumnDropout.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert isinstance(revived, ColumnDropout) and revived.get_config() == config
    inputs = keras.Input((6,))
    _keras_file_round_trip(keras.Model(inputs, layer(inputs)), tmp_path / "d.keras", _units((3, 6)))


def test_dropout_config_saved_before_the_form_loads_as_inverted():
    """Files saved before `form` existed were trained with Keras's (inverted) dropout; those
    before 0.2 also carry `devices`."""
    saved = dict(name="drop6", trainable=True, rate=0.5, seed=None, noise_shape=None)
    for config in (saved, dict(saved, devices=["/cpu:0", "/cpu:1"])):
        layer = ColumnDropout.from_config(config)
        assert layer.form == "inverted" and layer.get_config()["form"] == "inverted"
        np.testing.assert_array_equal(layer(_units((2, 3))).numpy(), _units((2, 3)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rate=0.5, form="gaussian"), "Received: form='gaussian'"),
        (dict(rate=0.5, noise_shape=(None, 1)), r"noise_shape.*Received: noise_shape=\(None, 1\)"),
        (dict(rate=1.5), "Received: rate=1.5"),
    ],
)
def test_dropout_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ColumnDropout(**kwargs)


# What every layer here shares: legacy `devices` accepted, the unsaved `fast_call` switch.


@pytest.mark.parametrize(
    "layer_class,kwargs",
    [(GroupedDense, dict(units=4, groups=2)), (ColumnDropout, dict(rate=0.5, form="paper"))],
)
def test_legacy_devices_config_loads_and_computes_the_same(layer_class, kwargs):
    layer = layer_class(**kwargs)
    x = _units((2, 6))
    expected = layer(x).numpy()
    legacy = dict(layer.get_config(), devices=["/cpu:0", "/cpu:1"])
    if layer_class is GroupedDense:
        legacy["merge_columns"] = True  # fc8's, before 0.2.
    revived = layer_class.from_config(legacy)
    assert "devices" not in revived.get_config()
    revived.build(x.shape)
    revived.set_weights(layer.get_weights())
    np.testing.assert_array_equal(revived(x).numpy(), expected)


@pytest.mark.parametrize(
    "layer,call_kwargs,fast_args",
    [(GroupedDense(4, 2), {}, ()), (ColumnDropout(0.5), {"training": True}, (True,))],
)
def test_fast_call_is_an_unsaved_switch(layer, call_kwargs, fast_args):
    assert layer.fast_call is None
    calls = []
    layer.fast_call = lambda owner, x, *rest: calls.append((owner, *rest)) or tf.zeros((2, 4))
    assert not np.any(layer(_units((2, 4)), **call_kwargs).numpy())
    assert calls == [(layer, *fast_args)]
    assert type(layer).from_config(layer.get_config()).fast_call is None
