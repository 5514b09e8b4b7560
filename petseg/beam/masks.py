"""The job's postprocess step: keyed predictions at S x S -> masks at each image's size.

The probabilities, not the small mask, are upsampled (:mod:`petseg.serving.upsample`,
the same code ``train.py evaluate`` scores with): interpolating class
probabilities and taking the argmax afterwards gives smooth boundaries,
where resizing an S x S class map would give blocky ones.
"""

from __future__ import annotations

import numpy as np
from apache_beam.ml.inference.base import PredictionResult

from petseg.beam.io import error_output
from petseg.beam.records import ImageKey, Segmentation
from petseg.beam.threaded import ThreadedDoFn, ThreadedStep
from petseg.serving.upsample import mask_and_confidence


def segment(probabilities: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float]:
    """Upsamples, takes the argmax, and returns ``(mask [H, W], mean confidence)``.

    The confidence of a pixel is the probability of the class it was given.
    """
    mask, confidence = mask_and_confidence(probabilities, (height, width))
    return mask, float(np.mean(confidence, dtype=np.float64))


class PostprocessFn(ThreadedDoFn):
    """``(ImageKey, PredictionResult)`` -> :class:`Segmentation`, on a thread pool.

    Failures go to ``errors``.

    Args:
      threads: threads of the worker process's pool, shared with the other
        threaded steps (``None``: every core).
      max_in_flight: predictions held at once, at most.
    """

    def work(self, element: tuple[ImageKey, PredictionResult]) -> list:
        key, prediction = element
        try:
            mask, mean_confidence = segment(
                np.asarray(prediction.inference, dtype=np.float32), key.height, key.width
            )
        except Exception as error:  # e.g. MemoryError upsampling a huge image.
            return [error_output(key.source.path, "postprocess", error)]
        return [Segmentation(key, mask, mean_confidence)]


class PostprocessMasks(ThreadedStep):
    """Turns keyed predictions into full-size masks. Returns ``(segmentations, errors)``.

    Takes the arguments of :class:`PostprocessFn`.
    """

    fn_class = PostprocessFn
    fn_label = "UpsampleAndArgmax"
    main_tag = "segmentations"
