"""FusedBatchNormalization: Keras' layer, same numbers, run by TensorFlow's fused kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from petseg.training.distribute import precision_policy
from petseg.training.layers import (
    ConcatConv2DTranspose,
    FusedBatchNormalization,
    with_fused_batch_norm,
)

SHAPE = (4, 6, 5, 8)


def _pair(**config):
    """A Keras layer and a fused one with the same, non-trivial weights."""
    rng = np.random.default_rng(0)
    stock = keras.layers.BatchNormalization(**config)
    fused = FusedBatchNormalization(**config)
    for layer in (stock, fused):
        layer.build(SHAPE)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in stock.get_weights()]
    stock.set_weights(weights)
    fused.set_weights(weights)
    return stock, fused


@pytest.fixture
def inputs():
    return tf.constant(np.random.default_rng(1).normal(2.0, 3.0, SHAPE).astype(np.float32))


@pytest.mark.parametrize("training", [False, True])
def test_outputs_gradients_and_moving_statistics_equal_keras(inputs, training):
    stock, fused = _pair(momentum=0.9)
    initial_mean = fused.moving_mean.numpy()
    results = []
    for layer in (stock, fused):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=training)
            loss = tf.reduce_sum(outputs * tf.range(SHAPE[-1], dtype=tf.float32))
        gradients = tape.gradient(loss, [inputs, *layer.trainable_weights])
        results.append((outputs, gradients, [w.numpy() for w in layer.non_trainable_weights]))
    (stock_out, stock_grads, stock_stats), (fused_out, fused_grads, fused_stats) = results
    np.testing.assert_allclose(fused_out, stock_out, rtol=1e-4, atol=1e-4)
    for fused_grad, stock_grad in zip(fused_grads, stock_grads, strict=True):
        np.testing.assert_allclose(fused_grad, stock_grad, rtol=1e-3, atol=1e-3)
    for fused_stat, stock_stat in zip(fused_stats, stock_stats, strict=True):
        np.testing.assert_allclose(fused_stat, stock_stat, rtol=1e-5, atol=1e-5)
    # Training moves the statistics; inference leaves them alone.
    assert np.allclose(fused_stats[0], initial_mean) != training


def test_frozen_layer_normalises_with_its_moving_statistics(inputs):
    stock, fused = _pair()
    stock.trainable = fused.trainable = False
    np.testing.assert_allclose(
        fused(inputs, training=True), stock(inputs, training=True), rtol=1e-4, atol=1e-4
    )


def test_bfloat16_activations_under_mixed_precision(inputs):
    with precision_policy("mixed_bfloat16"):
        stock, fused = _pair()
    outputs = fused(inputs, training=True)
    assert outputs.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(outputs, tf.float32),
        tf.cast(stock(inputs, training=True), tf.float32),
        rtol=0.02,
        atol=0.05,
    )


def test_unfusable_calls_fall_back_to_keras():
    stock, fused = _pair(axis=1)  # channels first
    values = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype(np.float32))
    np.testing.assert_allclose(
        fused(values, training=True), stock(values, training=True), atol=1e-5
    )


def test_saves_and_loads_as_its_own_class(tmp_path, inputs):
    _, fused = _pair()
    model = keras.Sequential([keras.Input(SHAPE[1:]), fused])
    model.save(tmp_path / "bn.keras")
    loaded = keras.models.load_model(tmp_path / "bn.keras")
    assert isinstance(loaded.layers[0], FusedBatchNormalization)
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6)


def test_with_fused_batch_norm_copies_a_nested_model(inputs):
    inner_in = keras.Input(SHAPE[1:])
    inner = keras.Model(
        inner_in,
        keras.layers.BatchNormalization(name="bn")(
            keras.layers.Conv2D(8, 3, name="conv")(inner_in)
        ),
        name="inner",
    )
    outer_in = keras.Input(SHAPE[1:])
    outer = keras.Model(outer_in, keras.layers.BatchNormalization(name="top")(inner(outer_in)))
    for layer in (inner.get_layer("bn"), outer.get_layer("top")):
        layer.set_weights([np.full(w.shape, 0.7, np.float32) for w in layer.get_weights()])
    inner.trainable = False

    copy = with_fused_batch_norm(outer)
    assert isinstance(copy.get_layer("top"), FusedBatchNormalization)
    assert isinstance(copy.get_layer("inner").get_layer("bn"), FusedBatchNormalization)
    assert not copy.get_layer("inner").trainable
    np.testing.assert_allclose(copy(inputs), outer(inputs), rtol=1e-5, atol=1e-5)


def _stock_unet(image_size: int, alpha: float) -> keras.Model:
    """The same U-Net written with Keras' stock layers only: Concatenate, Conv2DTranspose,
    BatchNormalization (the tutorial's formulation, with petseg's input scaling)."""
    from petseg.training.model import DECODER_FILTERS, SKIP_LAYER_NAMES

    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False, weights=None
    )
    encoder = keras.Model(
        backbone.input, [backbone.get_layer(name).output for name in SKIP_LAYER_NAMES]
    )
    encoder.trainable = False
    inputs = keras.Input((image_size, image_size, 3))
    skips = encoder(keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs), training=False)
    x = skips[-1]
    for filters, skip in zip(DECODER_FILTERS, reversed(skips[:-1]), strict=True):
        x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.Concatenate()([x, skip])
    return keras.Model(inputs, keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")(x))


@pytest.mark.parametrize("encoder_trainable", [False, True])
def test_petseg_unet_computes_what_the_stock_layers_compute(encoder_trainable):
    from petseg.training.model import build_unet, set_encoder_trainable

    petseg_model = build_unet(64, alpha=0.35, encoder_weights=None)
    stock = _stock_unet(64, alpha=0.35)
    rng = np.random.default_rng(3)
    # Non-trivial batch-norm statistics everywhere, so every layer's arithmetic shows.
    weights = [
        w + rng.uniform(0.1, 0.5, w.shape).astype(np.float32) for w in petseg_model.get_weights()
    ]
    petseg_model.set_weights(weights)
    stock.set_weights(weights)
    set_encoder_trainable(petseg_model, encoder_trainable)
    stock.layers[2].trainable = encoder_trainable
    images = tf.constant(rng.integers(0, 256, (4, 64, 64, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 3, (4, 64, 64)))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    results = []
    for model in (petseg_model, stock):
        np.testing.assert_equal(model.count_params(), petseg_model.count_params())
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            value = loss(labels, logits)
        results.append((logits, tape.gradient(value, model.trainable_weights)))
    (petseg_logits, petseg_grads), (stock_logits, stock_grads) = results
    np.testing.assert_allclose(petseg_logits, stock_logits, rtol=1e-3, atol=1e-3)
    assert len(petseg_grads) == len(stock_grads)
    differences = [float(tf.norm(p - s)) for p, s in zip(petseg_grads, stock_grads, strict=True)]
    norms = [float(tf.norm(grad)) for grad in stock_grads]
    assert np.linalg.norm(differences) < 1e-4 * np.linalg.norm(norms)
    # Each weight too, but those whose gradient is float noise (a few of the frozen
    # statistics' neighbours get 1e-10 of the total) have no meaningful relative error.
    for difference, norm in zip(differences, norms, strict=True):
        if norm > 1e-6 * np.linalg.norm(norms):
            assert difference < 1e-2 * norm


def test_concat_conv_transpose_reads_its_inputs_as_one_concatenation(tmp_path):
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 5, 5, 6)).astype(np.float32))
    skip = tf.constant(rng.normal(size=(2, 5, 5, 3)).astype(np.float32))
    split = ConcatConv2DTranspose(4, 3, strides=2, padding="same", name="t")
    whole = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")
    outputs = split([x, skip])
    whole.build((2, 5, 5, 9))
    whole.set_weights(split.get_weights())
    np.testing.assert_allclose(outputs, whole(tf.concat([x, skip], -1)), atol=1e-5)
    assert tuple(split.compute_output_shape([(2, 5, 5, 6), (2, 5, 5, 3)])) == (2, 10, 10, 4)
    with pytest.raises(ValueError, match=r"built for inputs of \[6, 3\] channels, got \[6, 2\]"):
        split([x, skip[..., :2]])

    model_inputs = [keras.Input((5, 5, 6)), keras.Input((5, 5, 3))]
    model = keras.Model(model_inputs, split(model_inputs))
    model.save(tmp_path / "t.keras")
    loaded = keras.models.load_model(tmp_path / "t.keras")
    np.testing.assert_allclose(loaded([x, skip]), outputs, atol=1e-6)

    single = ConcatConv2DTranspose(4, 3, strides=2, padding="same")
    assert single(x).shape == (2, 10, 10, 4)
    with pytest.raises(ValueError, match="channels_last"):
        ConcatConv2DTranspose(4, 3, data_format="channels_first")
