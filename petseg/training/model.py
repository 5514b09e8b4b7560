"""The U-Net of the TensorFlow segmentation tutorial: MobileNetV2 encoder, pix2pix decoder.

The encoder's five skip outputs feed a decoder of transposed-convolution
upsample blocks (the pix2pix ``upsample`` block, written here because
``tensorflow-examples`` is not installable). Input scaling lives inside the
model, so the exported SavedModel takes raw 0-255 pixels and training and
serving cannot drift apart.
"""

from __future__ import annotations

import os

import keras

from petseg.classes import NUM_CLASSES
from petseg.training.layers import (
    ConcatConv2DTranspose,
    FusedBatchNormalization,
    with_fused_batch_norm,
)

# The tutorial's skip layers, from the highest resolution (S/2) to the lowest (S/32).
SKIP_LAYER_NAMES: tuple[str, ...] = (
    "block_1_expand_relu",
    "block_3_expand_relu",
    "block_6_expand_relu",
    "block_13_expand_relu",
    "block_16_project",
)
DECODER_FILTERS: tuple[int, ...] = (512, 256, 128, 64)
ENCODER_NAME = "encoder"


class EncoderWeightsError(RuntimeError):
    """The encoder's weights could not be had (offline, or a wrong file)."""


def upsample_block(
    inputs: list[keras.KerasTensor], filters: int, kernel_size: int, dropout: float, name: str
) -> keras.KerasTensor:
    """pix2pix's upsample: Conv2DTranspose(stride 2) -> BatchNorm -> [Dropout] -> ReLU.

    ``inputs`` are the tensors pix2pix concatenates before the block (the
    previous block's output and a skip connection, or the encoder's last
    output alone); the transposed convolution reads them side by side
    without copying them into one (:class:`petseg.training.layers.ConcatConv2DTranspose`).
    The batch normalization is Keras' layer run by TensorFlow's fused kernel
    (:class:`petseg.training.layers.FusedBatchNormalization`).
    """
    x = ConcatConv2DTranspose(
        filters,
        kernel_size,
        strides=2,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.02),
        use_bias=False,
        name=f"{name}_conv_transpose",
    )(inputs)
    x = FusedBatchNormalization(name=f"{name}_batch_norm")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _resolve_weights(encoder_weights: str | None, alpha: float) -> str | None:
    if encoder_weights in (None, "", "none"):
        return None
    if encoder_weights == "imagenet":
        return "imagenet"
    if not os.path.isfile(encoder_weights):
        raise EncoderWeightsError(f"encoder weights file not found: {encoder_weights}")
    return encoder_weights


def build_encoder(
    image_size: int, alpha: float = 1.0, encoder_weights: str | None = "imagenet"
) -> keras.Model:
    """MobileNetV2 cut at the five skip layers, as one named sub-model.

    Args:
      image_size: input side in pixels.
      alpha: MobileNetV2 width multiplier.
      encoder_weights: ``"imagenet"`` (Keras downloads and caches them), a
        local ``.h5`` path, or ``None``/``"none"`` for random init.

    Raises:
      EncoderWeightsError: the weights cannot be downloaded or loaded.
    """
    weights = _resolve_weights(encoder_weights, alpha)
    try:
        backbone = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3),
            alpha=alpha,
            include_top=False,
            weights=weights,
        )
    except Exception as error:
        if weights == "imagenet":
            raise EncoderWeightsError(
                "could not download MobileNetV2 ImageNet weights "
                f"({type(error).__name__}); offline, pass --encoder-weights PATH to a local "
                "mobilenet_v2_*_no_top.h5 file, or --encoder-weights none"
            ) from None
        raise EncoderWeightsError(
            f"could not load encoder weights {weights!r} into MobileNetV2(alpha={alpha}): {error}"
        ) from None
    outputs = [backbone.get_layer(name).output for name in SKIP_LAYER_NAMES]
    encoder = keras.Model(inputs=backbone.input, outputs=outputs, name=ENCODER_NAME)
    # Same layers and weights, with TensorFlow's fused batch normalization.
    return with_fused_batch_norm(encoder)


def build_unet(
    image_size: int = 128,
    num_classes: int = NUM_CLASSES,
    alpha: float = 1.0,
    encoder_weights: str | None = "imagenet",
    trainable_encoder: bool = False,
    dropout: float = 0.0,
    name: str = "petseg_unet",
) -> keras.Model:
    """Builds the segmentation U-Net; call inside a strategy's scope to distribute it.

    The model takes ``[N, S, S, 3]`` pixels in 0-255 (uint8 or float) and
    returns float32 logits ``[N, S, S, num_classes]``.

    Args:
      image_size: input side S; a multiple of 32 (the encoder downsamples 32x), at least 32.
      num_classes: output channels.
      alpha: MobileNetV2 width multiplier.
      encoder_weights: ``"imagenet"``, a local ``.h5`` path, or ``None``.
      trainable_encoder: whether the encoder's weights train.
      dropout: dropout rate in each decoder block (0 disables).
      name: the model's name.

    The arguments' ranges are :class:`~petseg.training.config.TrainConfig`'s to check.

    Raises:
      EncoderWeightsError: the encoder's weights cannot be had.
    """

    encoder = build_encoder(image_size, alpha, encoder_weights)
    encoder.trainable = trainable_encoder

    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    # ImageNet MobileNetV2 expects [-1, 1] (keras.applications.mobilenet_v2.preprocess_input).
    x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="scale_to_unit_range")(inputs)
    # training=False keeps the encoder's BatchNorm in inference mode even when
    # it is unfrozen for fine-tuning, so a small batch cannot wreck its statistics.
    skips = encoder(x, training=False)
    # Each block's output goes on beside the skip features of its resolution.
    features = [skips[-1]]
    for index, (filters, skip) in enumerate(
        zip(DECODER_FILTERS, reversed(skips[:-1]), strict=True)
    ):
        x = upsample_block(features, filters, 3, dropout, name=f"decoder_block_{index + 1}")
        features = [x, skip]
    # Logits stay float32 under mixed precision: softmax and loss need the range.
    logits = ConcatConv2DTranspose(
        num_classes, 3, strides=2, padding="same", dtype="float32", name="logits"
    )(features)
    return keras.Model(inputs=inputs, outputs=logits, name=name)


def set_encoder_trainable(model: keras.Model, trainable: bool, fine_tune_from: str | None = None):
    """Freezes or unfreezes the encoder, optionally only from one layer upward.

    Args:
      model: a model from :func:`build_unet`.
      trainable: the encoder's new state.
      fine_tune_from: name of the first encoder layer to unfreeze; earlier
        layers stay frozen. ``None`` applies ``trainable`` to every layer.
    """
    encoder = model.get_layer(ENCODER_NAME)
    encoder.trainable = trainable
    if not trainable or fine_tune_from is None:
        return
    names = [layer.name for layer in encoder.layers]
    if fine_tune_from not in names:
        raise ValueError(f"encoder has no layer named {fine_tune_from!r}")
    first = names.index(fine_tune_from)
    for layer in encoder.layers[:first]:
        layer.trainable = False


def resize_unet(model: keras.Model, image_size: int, alpha: float, dropout: float = 0.0):
    """The same trained network at another input size, weights copied.

    Every layer is convolutional, so the weights fit any size that is a
    multiple of 32; a model trained on random crops often scores better
    served at a somewhat larger size than it was trained at.

    Args:
      model: a model from :func:`build_unet`.
      image_size: the new input side.
      alpha: the width multiplier ``model`` was built with.
      dropout: the decoder dropout ``model`` was built with.
    """
    resized = build_unet(
        image_size,
        int(model.output_shape[-1]),
        alpha,
        encoder_weights=None,
        dropout=dropout,
        name=model.name,
    )
    resized.set_weights(model.get_weights())
    return resized
