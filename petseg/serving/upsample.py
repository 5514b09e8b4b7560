"""From model-size probabilities to a class mask at the image's own size.

The model sees every image squashed to S x S. To label the original pixels,
the class *probabilities* are resized bilinearly to the original height and
width and only then reduced with argmax. Resizing the S x S argmax mask
instead (nearest neighbour) gives blocky, staircase outlines, which costs
most on the thin border class; interpolating probabilities places each
boundary between model pixels where the classes' scores cross.

Both ``train.py evaluate`` and the Beam segmentation job use these
functions, so offline scores describe exactly the masks users get.

Implementation: the C class planes are resized as a batch of C
one-channel images by TensorFlow's bilinear kernel (``ResizeBilinear`` with
half-pixel centres, the kernel behind ``tf.image.resize`` and the same
sampling grid as Pillow's bilinear resize used on the input), called as the
raw op: for a mask of a few thousand pixels, ``tf.image.resize``'s Python
wrapping cost more than the resize. The planes come out contiguous, so
:func:`mask_and_confidence_of_planes` reduces them in NumPy without
transposing first (figures: docs/benchmarks.md, "Pipeline cost").
"""

from __future__ import annotations

import numpy as np


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {size}")
    return height, width


def upsample_planes(probabilities, size: tuple[int, int]) -> np.ndarray:
    """Resizes class probabilities bilinearly to ``size``, as one plane per class.

    Args:
      probabilities: float ``[S, S, C]`` (or ``[N, S, S, C]``), numpy or tensor.
      size: target ``(height, width)``.

    Returns:
      float32 numpy array ``[C, height, width]`` (or ``[N, C, height, width]``).
      Each pixel is a convex combination of four model pixels, so it still
      sums to 1 over classes.

    Raises:
      ValueError: not a 3-D or 4-D array, or a non-positive size.
    """
    height, width = _check_size(size)
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim not in (3, 4):
        raise ValueError(
            f"probabilities must be [S, S, C] or [N, S, S, C], got shape {probabilities.shape}"
        )
    batch = probabilities if probabilities.ndim == 4 else probabilities[None]
    count, rows, columns, classes = batch.shape
    # Channels last -> one image per class plane: [N * C, S, S, 1].
    planes = np.ascontiguousarray(np.moveaxis(batch, -1, 1)).reshape(-1, rows, columns, 1)
    if (rows, columns) != (height, width):
        # Imported here: the job's driver builds its pipeline without TensorFlow.
        import tensorflow as tf

        # Pinned to the CPU so a GPU worker writes the same masks as a CPU one.
        with tf.device("/CPU:0"):
            planes = tf.raw_ops.ResizeBilinear(
                images=planes, size=(height, width), half_pixel_centers=True
            ).numpy()
    planes = planes.reshape(count, classes, height, width)
    return planes if probabilities.ndim == 4 else planes[0]


def mask_and_confidence_of_planes(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax over class planes ``[C, ..., H, W]`` and the winning probability, in one pass.

    Equal to ``np.argmax`` / ``np.max`` over the first axis (ties go to the
    lower class index), but a loop over the few contiguous planes reads each
    plane once, where NumPy's reductions stride across all of them for every
    pixel (figures: docs/benchmarks.md).

    Returns:
      ``(uint8 class indices [..., H, W], float32 confidence [..., H, W])``.
    """
    planes = np.asarray(planes, np.float32)
    if len(planes) == 1:
        return np.zeros(planes[0].shape, np.uint8), planes[0].copy()
    # The first two classes in two passes: a boolean "class 1 wins" is already
    # the uint8 class map (True is 1), and their maximum is the confidence.
    mask = np.greater(planes[1], planes[0]).view(np.uint8)
    confidence = np.maximum(planes[0], planes[1])
    for index in range(2, len(planes)):
        better = planes[index] > confidence
        np.copyto(mask, np.uint8(index), where=better)
        np.maximum(confidence, planes[index], out=confidence)
    return mask, confidence


def mask_and_confidence(
    probabilities, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and the winning probability of channels-last probabilities, upsampled
    to ``size`` first if given (:func:`upsample_planes`).

    Args:
      probabilities: float ``[S, S, C]`` (or ``[N, S, S, C]``).
      size: ``(height, width)`` of the original image, or None to keep S x S.

    Returns:
      ``(uint8 class indices, float32 confidence)``, each ``[height, width]``
      (or ``[N, height, width]``).
    """
    if size is None:
        # Class planes made contiguous for the reduction.
        planes = np.moveaxis(np.asarray(probabilities, np.float32), -1, 0)
        return mask_and_confidence_of_planes(np.ascontiguousarray(planes))
    planes = upsample_planes(probabilities, size)  # [C, H, W] or [N, C, H, W]
    return mask_and_confidence_of_planes(np.moveaxis(planes, -3, 0))


def probabilities_to_mask(probabilities, size: tuple[int, int] | None = None) -> np.ndarray:
    """The class mask: argmax over classes, after upsampling to ``size`` if given.

    Args:
      probabilities: float ``[S, S, C]`` (or ``[N, S, S, C]``).
      size: ``(height, width)`` of the original image, or None to keep S x S.

    Returns:
      uint8 class indices ``[height, width]`` (or ``[N, height, width]``).
    """
    return mask_and_confidence(probabilities, size)[0]
