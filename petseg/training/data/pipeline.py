"""Input pipelines: cache, shuffle, paired augmentation, batch, repeat, prefetch.

Augmentation runs per example before batching, on the cached decoded data,
so decoding happens once and every epoch sees fresh random flips and crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Which random changes training applies.

    Attributes:
      flip: random horizontal flip, the same for image and mask.
      min_crop_scale: random square crop of this fraction of the side or more,
        resized back (1.0 disables).
      colour_jitter: strength of brightness/contrast/saturation changes to the
        image only (0 disables).
    """

    flip: bool = True
    min_crop_scale: float = 1.0
    colour_jitter: float = 0.0


def augment_pair(image: tf.Tensor, mask: tf.Tensor, config: AugmentConfig):
    """Applies the same geometric change to image and mask, colour changes to the image.

    Args:
      image: ``uint8 [S, S, 3]``.
      mask: ``uint8 [S, S, 1]``.

    Returns:
      ``(image float32 [S, S, 3] in 0-255, mask uint8 [S, S, 1])``.
    """
    size = tf.shape(image)[0]
    # Image and mask travel as one tensor through every geometric op, so they
    # cannot fall out of alignment.
    combined = tf.concat([image, mask], axis=-1)
    if config.flip:
        combined = tf.image.random_flip_left_right(combined)
    if config.min_crop_scale < 1.0:
        scale = tf.random.uniform([], config.min_crop_scale, 1.0)
        crop = tf.cast(tf.round(scale * tf.cast(size, tf.float32)), tf.int32)
        combined = tf.image.random_crop(combined, tf.stack([crop, crop, 4]))
    image, mask = combined[..., :3], combined[..., 3:]
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear")
    # Nearest neighbour: interpolating class indices would invent classes.
    mask = tf.image.resize(mask, [size, size], method="nearest")
    if config.colour_jitter > 0:
        strength = config.colour_jitter
        unit = image / 255.0
        unit = tf.image.random_brightness(unit, 0.5 * strength)
        unit = tf.image.random_contrast(unit, 1.0 - strength, 1.0 + strength)
        unit = tf.image.random_saturation(unit, 1.0 - strength, 1.0 + strength)
        image = tf.clip_by_value(unit, 0.0, 1.0) * 255.0
    return image, tf.cast(mask, tf.uint8)


def _with_weights(class_weights: Sequence[float] | None):
    if class_weights is None:
        return lambda image, mask: (image, mask)
    weights = tf.constant(list(class_weights), tf.float32)
    # Per-pixel sample weights: Keras multiplies each pixel's loss by its class weight.
    return lambda image, mask: (image, mask, tf.gather(weights, tf.cast(mask[..., 0], tf.int32)))


def train_batches(
    dataset: tf.data.Dataset,
    global_batch_size: int,
    augment: AugmentConfig = AugmentConfig(),
    shuffle_buffer: int = 1000,
    class_weights: Sequence[float] | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    """The endless, shuffled, augmented training stream in global batches."""
    return (
        dataset.cache()
        .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .map(lambda image, mask: augment_pair(image, mask, augment), tf.data.AUTOTUNE)
        .map(_with_weights(class_weights), tf.data.AUTOTUNE)
        .batch(global_batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_batches(
    dataset: tf.data.Dataset,
    global_batch_size: int,
    class_weights: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """Every evaluation example once, in order, as float images (no augmentation)."""
    return (
        dataset.cache()
        .map(lambda image, mask: (tf.cast(image, tf.float32), mask), tf.data.AUTOTUNE)
        .map(_with_weights(class_weights), tf.data.AUTOTUNE)
        .batch(global_batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
