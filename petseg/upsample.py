"""From model-size probabilities to a class mask at the image's own size.

The model sees every image squashed to S x S. To label the original pixels,
the class *probabilities* are resized bilinearly to the original height and
width and only then reduced with argmax. Resizing the S x S argmax mask
instead (nearest neighbour) gives blocky, staircase outlines, which costs
most on the thin border class; interpolating probabilities places each
boundary between model pixels where the classes' scores cross.

Both ``train.py evaluate`` and the Beam segmentation job use these
functions, so offline scores describe exactly the masks users get.

Implementation: ``tf.image.resize(method="bilinear")`` (half-pixel centres,
the same sampling grid as Pillow's bilinear resize used on the input)
resizes all C channels in one call on any device, then
:func:`mask_and_confidence` reduces contiguous class planes in NumPy: the
fastest of the alternatives measured (figures: docs/benchmarks.md, "Where
the targets are missed, and why").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {size}")
    return height, width


def upsample_probabilities(probabilities, size: tuple[int, int]) -> np.ndarray:
    """Resizes class probabilities bilinearly to ``size``.

    Args:
      probabilities: float ``[S, S, C]`` (or ``[N, S, S, C]``), numpy or tensor.
      size: target ``(height, width)``.

    Returns:
      float32 numpy array ``[height, width, C]`` (or ``[N, height, width, C]``).
      Each pixel is a convex combination of four model pixels, so it still
      sums to 1 over classes.

    Raises:
      ValueError: not a 3-D or 4-D array, or a non-positive size.
    """
    height, width = _check_size(size)
    probabilities = tf.convert_to_tensor(probabilities, tf.float32)
    if probabilities.shape.rank not in (3, 4):
        raise ValueError(
            f"probabilities must be [S, S, C] or [N, S, S, C], got shape {probabilities.shape}"
        )
    if tuple(probabilities.shape[-3:-1]) == (height, width):
        return probabilities.numpy()
    # Pinned to the CPU so a GPU worker writes the same masks as a CPU one.
    with tf.device("/CPU:0"):
        return tf.image.resize(probabilities, (height, width), method="bilinear").numpy()


def mask_and_confidence(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax over the last axis and the winning probability, in one pass.

    Equal to ``np.argmax`` / ``np.max`` over classes (ties go to the lower
    class index), but a loop over the few class planes, each first made
    contiguous, runs many times faster than NumPy's reductions along a short
    last axis.

    Returns:
      ``(uint8 class indices [..., H, W], float32 confidence [..., H, W])``.
    """
    planes = np.ascontiguousarray(np.moveaxis(np.asarray(probabilities, np.float32), -1, 0))
    confidence = planes[0].copy()
    mask = np.zeros(confidence.shape, np.uint8)
    for index in range(1, len(planes)):
        better = planes[index] > confidence
        np.copyto(mask, np.uint8(index), where=better)
        np.maximum(confidence, planes[index], out=confidence)
    return mask, confidence


def probabilities_to_mask(probabilities, size: tuple[int, int] | None = None) -> np.ndarray:
    """The class mask: argmax over classes, after upsampling to ``size`` if given.

    Args:
      probabilities: float ``[S, S, C]`` (or ``[N, S, S, C]``).
      size: ``(height, width)`` of the original image, or None to keep S x S.

    Returns:
      uint8 class indices ``[height, width]`` (or ``[N, height, width]``).
    """
    if size is not None:
        probabilities = upsample_probabilities(probabilities, size)
    return mask_and_confidence(probabilities)[0]
