"""FusedBatchNormalization: Keras' layer, same numbers, run by TensorFlow's fused kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from petseg.distribute import precision_policy
from petseg.layers import FusedBatchNormalization, with_fused_batch_norm

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
