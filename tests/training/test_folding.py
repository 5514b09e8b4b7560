"""Batch normalizations folded into their convolutions answer as the model in inference mode."""

import keras
import numpy as np

from petseg.training.folding import FoldedBatchNormalization, fold_batch_norm
from petseg.training.model import build_unet


def _layers(model: keras.Model) -> list:
    found = []
    for layer in model.layers:
        found.extend(_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def _randomize_batch_norms(model: keras.Model, rng: np.random.Generator) -> int:
    """Statistics and affine terms far from their initial values, so folding them shows."""
    count = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = layer.get_weights()
            shape = weights[0].shape
            layer.set_weights(
                [rng.uniform(0.5, 1.5, shape) for _ in weights[:-2]]
                + [rng.normal(0.0, 0.5, shape), rng.uniform(0.2, 2.0, shape)]
            )
            count += 1
    return count


def test_folded_unet_answers_as_the_model_with_no_batch_norm_left():
    keras.utils.set_random_seed(7)
    model = build_unet(64, 3, alpha=0.35, encoder_weights=None, dropout=0.1)
    batch_norms = _randomize_batch_norms(model, np.random.default_rng(0))
    folded = fold_batch_norm(model)

    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    served = keras.ops.convert_to_numpy(folded(images, training=False))
    assert np.abs(served - expected).max() <= 1e-4 * np.abs(expected).max()
    np.testing.assert_array_equal(served.argmax(-1), expected.argmax(-1))

    kinds = [type(layer) for layer in _layers(folded)]
    assert not any(issubclass(kind, keras.layers.BatchNormalization) for kind in kinds)
    assert kinds.count(FoldedBatchNormalization) == batch_norms == 54
    # Each convolution gains a bias, each batch normalization's 4 vectors go.
    assert len(folded.weights) == len(model.weights) - 3 * batch_norms
    assert [layer.name for layer in _layers(folded)] == [layer.name for layer in _layers(model)]


def test_only_batch_norms_that_alone_read_a_linear_convolution_are_folded():
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_bias")(inputs)
    x = keras.layers.BatchNormalization(center=False, name="bn_no_beta")(x)
    x = keras.layers.DepthwiseConv2D(
        3, depth_multiplier=2, padding="same", use_bias=False, name="depthwise"
    )(x)
    x = keras.layers.BatchNormalization(scale=False, name="bn_no_gamma")(x)
    x = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="transpose")(x)
    x = keras.layers.BatchNormalization(name="bn_after_transpose")(x)
    activated = keras.layers.Conv2D(5, 1, activation="relu", name="conv_relu")(x)
    x = keras.layers.BatchNormalization(name="bn_after_relu")(activated)
    shared = keras.layers.Conv2D(5, 1, use_bias=False, name="conv_shared")(x)
    normalized = keras.layers.BatchNormalization(name="bn_of_shared")(shared)
    x = keras.layers.Add(name="residual")([normalized, shared])
    outputs = keras.layers.BatchNormalization(name="bn_after_add")(x)
    model = keras.Model(inputs, outputs)
    _randomize_batch_norms(model, np.random.default_rng(2))
    for layer in model.layers:
        if layer.name in ("conv_bias", "transpose"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(3).normal(0, 1, bias.shape)])

    folded = fold_batch_norm(model)

    remaining = {
        layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert remaining == {"bn_after_relu", "bn_of_shared", "bn_after_add"}
    assert folded.get_layer("depthwise").use_bias and not model.get_layer("depthwise").use_bias
    images = np.random.default_rng(4).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(images)),
        keras.ops.convert_to_numpy(model(images, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_convolutions_read_elsewhere_keep_their_batch_norm():
    inputs = keras.Input((8, 8, 3), name="pixels")
    conv = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_read_by_submodel")(inputs)
    normalized = keras.layers.BatchNormalization(name="bn_beside_submodel")(conv)
    inner_inputs = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_inputs, keras.layers.Conv2D(4, 1, name="inner_conv")(inner_inputs), name="inner"
    )
    x = keras.layers.Add(name="add")([normalized, inner(conv)])
    output_conv = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_also_an_output")(x)
    output_norm = keras.layers.BatchNormalization(name="bn_of_an_output")(output_conv)
    model = keras.Model(inputs, [output_norm, output_conv])
    _randomize_batch_norms(model, np.random.default_rng(5))

    folded = fold_batch_norm(model)

    assert {
        layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)
    } == {"bn_beside_submodel", "bn_of_an_output"}
    images = np.random.default_rng(6).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    for served, expected in zip(folded(images), model(images, training=False), strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(served), keras.ops.convert_to_numpy(expected), atol=1e-5
        )


def test_a_float32_model_folded_under_mixed_precision_stays_float32():
    from petseg.training.distribute import precision_policy

    keras.utils.set_random_seed(8)
    model = build_unet(32, 3, alpha=0.35, encoder_weights=None)
    _randomize_batch_norms(model, np.random.default_rng(9))
    with precision_policy("mixed_bfloat16"):
        folded = fold_batch_norm(model)

    computing = [
        layer for layer in _layers(folded) if not isinstance(layer, keras.layers.InputLayer)
    ]
    assert {layer.dtype_policy.name for layer in computing} == {"float32"}
    images = np.random.default_rng(10).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    served = keras.ops.convert_to_numpy(folded(images))
    assert served.dtype == np.float32
    assert np.abs(served - expected).max() <= 1e-5 * np.abs(expected).max()
