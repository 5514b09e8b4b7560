"""The U-Net: shapes, parameter counts, encoder freezing, weights, and save/reload."""

import ast
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from petseg.training import model as unet


@pytest.fixture(scope="module")
def tiny():
    return unet.build_unet(64, alpha=0.35, encoder_weights=None)


def _decoder_params(model, num_classes=3):
    """Counts the decoder's parameters from its definition, independently of Keras."""
    encoder = model.get_layer(unet.ENCODER_NAME)
    skip_channels = [int(output.shape[-1]) for output in encoder.outputs]
    channels = skip_channels[-1]
    total = 0
    for filters, skip in zip(unet.DECODER_FILTERS, reversed(skip_channels[:-1]), strict=True):
        total += 3 * 3 * channels * filters  # transposed conv, no bias
        total += 4 * filters  # batch norm: gamma, beta, moving mean and variance
        channels = filters + skip
    return total + 3 * 3 * channels * num_classes + num_classes


def test_output_is_logits_per_pixel(tiny):
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    logits = tiny.predict(images, verbose=0)
    assert logits.shape == (2, 64, 64, 3) and logits.dtype == np.float32


def test_parameter_count_is_encoder_plus_decoder(tiny):
    encoder = tiny.get_layer(unet.ENCODER_NAME)
    assert tiny.count_params() == encoder.count_params() + _decoder_params(tiny)


def test_full_width_model_matches_the_tutorial_parameter_count():
    # The tutorial's model.summary(): 6,504,227 parameters (MobileNetV2 alpha 1.0, 3 classes).
    model = unet.build_unet(64, alpha=1.0, encoder_weights=None)
    assert model.count_params() == 6_504_227


def test_skip_layers_are_the_tutorials(tiny):
    encoder = tiny.get_layer(unet.ENCODER_NAME)
    sides = [int(output.shape[1]) for output in encoder.outputs]
    assert sides == [32, 16, 8, 4, 2]  # S/2 ... S/32


def test_encoder_frozen_or_trainable_as_asked():
    frozen = unet.build_unet(32, alpha=0.35, encoder_weights=None, trainable_encoder=False)
    encoder = frozen.get_layer(unet.ENCODER_NAME)
    assert encoder.trainable_weights == []
    trainable_params = sum(int(np.prod(w.shape)) for w in frozen.trainable_weights)
    # Only the decoder trains: its parameters less the BatchNorm moving statistics.
    assert trainable_params == _decoder_params(frozen) - 2 * sum(unet.DECODER_FILTERS)

    unet.set_encoder_trainable(frozen, True)
    assert len(encoder.trainable_weights) > 100

    unet.set_encoder_trainable(frozen, True, fine_tune_from="block_13_expand")
    names = [layer.name for layer in encoder.layers]
    first = names.index("block_13_expand")
    assert not any(layer.trainable_weights for layer in encoder.layers[:first])
    assert encoder.get_layer("block_16_project").trainable_weights

    unet.set_encoder_trainable(frozen, False)
    assert encoder.trainable_weights == []


def test_imagenet_weights_from_a_local_file_differ_from_random(encoder_weights):
    pretrained = unet.build_unet(64, alpha=1.0, encoder_weights=str(encoder_weights))
    random = unet.build_unet(64, alpha=1.0, encoder_weights=None)
    again = unet.build_unet(64, alpha=1.0, encoder_weights=str(encoder_weights))
    first_conv = [
        m.get_layer(unet.ENCODER_NAME).get_layer("Conv1").kernel.numpy()
        for m in (pretrained, random, again)
    ]
    assert not np.allclose(first_conv[0], first_conv[1])
    np.testing.assert_array_equal(first_conv[0], first_conv[2])
    # Pretrained batch norms carry ImageNet statistics; fresh ones are all zero/one.
    moving_mean = pretrained.get_layer(unet.ENCODER_NAME).get_layer("bn_Conv1").moving_mean.numpy()
    assert np.abs(moving_mean).max() > 0.01


def test_weights_of_the_wrong_width_are_a_clear_error(encoder_weights):
    with pytest.raises(unet.EncoderWeightsError, match="alpha=0.35"):
        unet.build_unet(64, alpha=0.35, encoder_weights=str(encoder_weights))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(unet.EncoderWeightsError, match="not found"):
        unet.build_unet(64, alpha=0.35, encoder_weights=str(tmp_path / "nope.h5"))


def test_offline_imagenet_names_the_local_option(tmp_path):
    # Offline for real: an empty Keras cache and every download sent to a closed port.
    closed = "http://127.0.0.1:9"
    environment = {
        **os.environ,
        "KERAS_HOME": str(tmp_path / "keras"),
        "HTTPS_PROXY": closed,
        "https_proxy": closed,
        "HTTP_PROXY": closed,
        "http_proxy": closed,
    }
    script = (
        "import petseg.training.model as unet\n"
        "try:\n"
        "    unet.build_unet(64, alpha=0.35, encoder_weights='imagenet')\n"
        "except unet.EncoderWeightsError as error:\n"
        "    print(repr(str(error)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    message = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert "--encoder-weights PATH" in message and "\n" not in message


def test_keras_file_round_trip(tiny, tmp_path):
    path = tmp_path / "model.keras"
    tiny.save(path)
    reloaded = keras.models.load_model(path)
    images = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), tiny.predict(images, verbose=0), atol=1e-5
    )


def test_dropout_blocks_are_present_when_asked():
    model = unet.build_unet(32, alpha=0.35, encoder_weights=None, dropout=0.3)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 4 and all(layer.rate == 0.3 for layer in dropouts)


def test_resized_unet_carries_the_trained_weights(tiny):
    resized = unet.resize_unet(tiny, 96, alpha=0.35)
    assert resized.input_shape == (None, 96, 96, 3) and resized.output_shape == (None, 96, 96, 3)
    for original, copied in zip(tiny.get_weights(), resized.get_weights(), strict=True):
        np.testing.assert_array_equal(original, copied)
