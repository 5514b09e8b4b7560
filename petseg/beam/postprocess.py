"""From the model's probabilities at S x S to a mask at the image's own size.

The probabilities, not the small mask, are upsampled: interpolating class
probabilities and taking the argmax afterwards gives smooth boundaries,
where resizing an S x S class map would give blocky ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult

from petseg.beam.io import ERRORS_TAG
from petseg.beam.records import ErrorRecord, ImageKey, Segmentation


def upsample_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes ``float32 [S, S, C]`` probabilities bilinearly to ``[height, width, C]``.

    ``tf.image.resize`` (half-pixel centres) resizes all channels at once and
    measured about 3x faster than Pillow's per-channel float resize. It is
    pinned to the CPU so a GPU worker gives the same bytes as a CPU one.
    """
    if probabilities.shape[:2] == (height, width):
        return probabilities.astype(np.float32, copy=False)
    import tensorflow as tf

    with tf.device("/CPU:0"):
        resized = tf.image.resize(probabilities[None], (height, width), method="bilinear")
    return resized.numpy()[0]


def probabilities_to_mask(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[H, W, C]`` probabilities -> (``uint8 [H, W]`` class map, ``float32 [H, W]`` confidence).

    The confidence of a pixel is the probability of the class it was given.
    """
    mask = np.argmax(probabilities, axis=-1).astype(np.uint8)
    confidence = np.max(probabilities, axis=-1)
    return mask, confidence


def segment(probabilities: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float]:
    """Upsamples, takes the argmax, and returns ``(mask [H, W], mean confidence)``."""
    mask, confidence = probabilities_to_mask(upsample_probabilities(probabilities, height, width))
    return mask, float(np.mean(confidence, dtype=np.float64))


class PostprocessFn(beam.DoFn):
    """``(ImageKey, PredictionResult)`` -> :class:`Segmentation`; failures go to ``errors``."""

    def process(self, element: tuple[ImageKey, PredictionResult]) -> Iterator[Segmentation]:
        key, prediction = element
        try:
            mask, mean_confidence = segment(
                np.asarray(prediction.inference, dtype=np.float32), key.height, key.width
            )
        except Exception as error:  # e.g. MemoryError upsampling a huge image.
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, ErrorRecord.from_exception(key.source.path, "postprocess", error)
            )
            return
        yield Segmentation(key, mask, mean_confidence)


class PostprocessMasks(beam.PTransform):
    """Turns keyed predictions into full-size masks. Returns ``(segmentations, errors)``."""

    def expand(self, predictions):
        results = predictions | "UpsampleAndArgmax" >> beam.ParDo(PostprocessFn()).with_outputs(
            ERRORS_TAG, main="segmentations"
        )
        return results.segmentations, results[ERRORS_TAG]
