"""The U-Net built from Keras' stock layers alone, so that any Keras backend can run it.

petseg's own model (``petseg.model.build_unet``) runs two of its layers on
TensorFlow kernels (fused batch normalization, the decoder's transposed
convolution over a never-built concatenation). The network here is the same
one written the tutorial's way: a ``Concatenate`` before each
``Conv2DTranspose`` and Keras' ``BatchNormalization``. Its weights have the
same shapes in the same order, so ``set_weights(model.get_weights())`` moves a
trained petseg model into it, and it loads under JAX or PyTorch on a machine
that has no TensorFlow. The seed tutorial's model in ``benchmarks.training``
is this network too, fed [0, 1] pixels instead of scaling 0-255 itself.

This module imports Keras and nothing of TensorFlow's.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def pix2pix_upsample(
    inputs: keras.KerasTensor, filters: int, kernel_size: int, name: str
) -> keras.KerasTensor:
    """tensorflow_examples' ``pix2pix.upsample(filters, size)``, without dropout."""
    x = keras.layers.Conv2DTranspose(
        filters,
        kernel_size,
        strides=2,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.02),
        use_bias=False,
        name=f"{name}_conv_transpose",
    )(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_batch_norm")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def portable_unet(
    image_size: int,
    alpha: float,
    num_classes: int,
    skip_layer_names: Sequence[str],
    decoder_filters: Sequence[int],
    encoder_weights: str | None = None,
    scale_inputs: bool = True,
    name: str = "portable_unet",
) -> keras.Model:
    """MobileNetV2 encoder (frozen) and pix2pix decoder, float32 logits ``[N, S, S, C]``.

    Args:
      image_size: input side S.
      alpha: MobileNetV2 width multiplier.
      num_classes: output channels.
      skip_layer_names: the encoder layers the decoder reads, highest resolution first.
      decoder_filters: each upsample block's filters, lowest resolution first.
      encoder_weights: what ``keras.applications.MobileNetV2`` takes as ``weights``.
      scale_inputs: whether the model takes 0-255 pixels and scales them to
        [-1, 1] itself, as petseg's does; ``False`` feeds the encoder as is.
      name: the model's name.

    Raises:
      ValueError: one decoder block is not given per skip connection below the last.
    """
    if len(decoder_filters) != len(skip_layer_names) - 1:
        raise ValueError(
            f"{len(skip_layer_names)} skip layers need {len(skip_layer_names) - 1} decoder "
            f"blocks, got filters {tuple(decoder_filters)}"
        )
    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        alpha=alpha,
        include_top=False,
        weights=encoder_weights,
    )
    encoder = keras.Model(
        inputs=backbone.input,
        outputs=[backbone.get_layer(layer).output for layer in skip_layer_names],
        name="encoder",
    )
    encoder.trainable = False

    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = inputs
    if scale_inputs:
        x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="scale_to_unit_range")(x)
    skips = encoder(x, training=False)
    x = skips[-1]
    for index, (filters, skip) in enumerate(
        zip(decoder_filters, reversed(skips[:-1]), strict=True)
    ):
        x = pix2pix_upsample(x, filters, 3, name=f"decoder_block_{index + 1}")
        x = keras.layers.Concatenate(name=f"decoder_block_{index + 1}_skip")([x, skip])
    # Logits stay float32 under mixed precision, as in petseg's model.
    logits = keras.layers.Conv2DTranspose(
        num_classes, 3, strides=2, padding="same", dtype="float32", name="logits"
    )(x)
    return keras.Model(inputs=inputs, outputs=logits, name=name)
