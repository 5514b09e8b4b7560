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
from petseg.labels.coco import class_scores
from petseg.serving.upsample import mask_and_confidence


def segment(
    probabilities: np.ndarray, height: int, width: int, per_class: bool = False
) -> tuple[np.ndarray, float, tuple[float, ...]]:
    """Upsamples, takes the argmax, and returns ``(mask [H, W], mean confidence,
    per-class confidence)``.

    The confidence of a pixel is the probability of the class it was given;
    a class's is its mean over the pixels given that class, computed only
    when ``per_class`` asks (COCO's scores), else empty.
    """
    mask, confidence = mask_and_confidence(probabilities, (height, width))
    mean = float(np.mean(confidence, dtype=np.float64))
    scores = class_scores(mask, confidence, probabilities.shape[-1]) if per_class else ()
    return mask, mean, scores


class PostprocessFn(ThreadedDoFn):
    """``(ImageKey, PredictionResult)`` -> :class:`Segmentation`, on a thread pool.

    Failures go to ``errors``.

    Args:
      threads: threads of the worker process's pool, shared with the other
        threaded steps (``None``: every core).
      max_in_flight: predictions held at once, at most.
      per_class: also compute each class's confidence (for COCO's scores).
    """

    def __init__(
        self, threads: int | None = None, max_in_flight: int | None = None, per_class: bool = False
    ):
        super().__init__(threads, max_in_flight)
        self._per_class = per_class

    def work(self, element: tuple[ImageKey, PredictionResult]) -> list:
        key, prediction = element
        try:
            mask, mean_confidence, scores = segment(
                np.asarray(prediction.inference, dtype=np.float32),
                key.height,
                key.width,
                self._per_class,
            )
        except Exception as error:  # e.g. MemoryError upsampling a huge image.
            return [error_output(key.source.path, "postprocess", error)]
        return [Segmentation(key, mask, mean_confidence, scores)]


class PostprocessMasks(ThreadedStep):
    """Turns keyed predictions into full-size masks. Returns ``(segmentations, errors)``.

    Takes the arguments of :class:`PostprocessFn`.
    """

    fn_class = PostprocessFn
    fn_label = "UpsampleAndArgmax"
    main_tag = "segmentations"
