"""Segmentation metrics: Keras metrics for ``fit`` and confusion-matrix arithmetic.

Training logs pixel accuracy, the IoU of each class and the mean IoU every
epoch through the Keras metrics below; the final evaluation and
``train.py evaluate`` count a confusion matrix and derive the same numbers
from it with :func:`metrics_from_confusion`, so all reports agree on one
definition.

Metrics count pixels. Class weights change the loss only: the Keras metrics
here ignore sample weights, so a weighted run still reports plain pixel
accuracy and IoU, comparable with an unweighted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from petseg.classes import CLASS_NAMES


@keras.saving.register_keras_serializable(package="petseg")
class PixelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Share of pixels whose argmax over the logits equals the label."""

    def __init__(self, name: str = "pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred)


@keras.saving.register_keras_serializable(package="petseg")
class ClassIoU(keras.metrics.IoU):
    """IoU of one class, from logits (``sparse_y_pred=False`` takes their argmax)."""

    def __init__(self, num_classes: int, class_id: int, name: str | None = None, **kwargs):
        kwargs.pop("target_class_ids", None)
        kwargs.pop("sparse_y_pred", None)
        super().__init__(
            num_classes=num_classes,
            target_class_ids=[class_id],
            name=name or f"iou_{class_id}",
            sparse_y_pred=False,
            **kwargs,
        )
        self.class_id = class_id

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_id": self.class_id}


@keras.saving.register_keras_serializable(package="petseg")
class MeanIoU(keras.metrics.IoU):
    """Mean over classes of the IoU, from logits."""

    def __init__(self, num_classes: int, name: str = "mean_iou", **kwargs):
        kwargs.pop("target_class_ids", None)
        kwargs.pop("sparse_y_pred", None)
        super().__init__(
            num_classes=num_classes,
            target_class_ids=list(range(num_classes)),
            name=name,
            sparse_y_pred=False,
            **kwargs,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred)


def segmentation_metrics(class_names: Sequence[str] = CLASS_NAMES) -> list[keras.metrics.Metric]:
    """The metrics ``compile`` gets: pixel accuracy, one IoU per class, mean IoU.

    Logged names are ``pixel_accuracy``, ``iou_<class name>`` and ``mean_iou``
    (``val_`` prefixed on the evaluation split).
    """
    num_classes = len(class_names)
    return [
        PixelAccuracy(),
        *(
            ClassIoU(num_classes, index, name=f"iou_{name}")
            for index, name in enumerate(class_names)
        ),
        MeanIoU(num_classes),
    ]


def confusion_matrix(
    true_classes: np.ndarray, predicted_classes: np.ndarray, num_classes: int
) -> np.ndarray:
    """Counts pixels by (true class, predicted class).

    Args:
      true_classes: integer class map of any shape; values outside
        ``[0, num_classes)`` (e.g. an "ignore" value) are not counted.
      predicted_classes: integer class map of the same shape.
      num_classes: C.

    Returns:
      ``int64 [C, C]``; row = true class, column = predicted class.

    Raises:
      ValueError: the shapes differ.
    """
    true_classes = np.asarray(true_classes).astype(np.int64).ravel()
    predicted_classes = np.asarray(predicted_classes).astype(np.int64).ravel()
    if true_classes.shape != predicted_classes.shape:
        raise ValueError(
            f"true and predicted maps differ in size: {true_classes.size} vs {predicted_classes.size}"
        )
    valid = (true_classes >= 0) & (true_classes < num_classes)
    valid &= (predicted_classes >= 0) & (predicted_classes < num_classes)
    index = true_classes[valid] * num_classes + predicted_classes[valid]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class; NaN for a class absent from truth and prediction."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)


def metrics_from_confusion(
    matrix: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, Any]:
    """The reported metrics of one confusion matrix.

    Returns:
      ``{"pixel_accuracy": float, "iou": {class name: float or None},
      "mean_iou": float, "pixels": int}``; the mean skips classes with no
      pixels in truth or prediction (``None`` in ``iou``), as Keras' IoU does.

    Raises:
      ValueError: the matrix does not match ``class_names``.
    """
    matrix = np.asarray(matrix)
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(
            f"confusion matrix of shape {matrix.shape} does not match {len(class_names)} classes"
        )
    total = int(matrix.sum())
    ious = iou_per_class(matrix)
    valid = ious[~np.isnan(ious)]
    return {
        "pixel_accuracy": float(np.trace(matrix) / total) if total else 0.0,
        "iou": {
            name: (None if np.isnan(value) else float(value))
            for name, value in zip(class_names, ious, strict=True)
        },
        "mean_iou": float(valid.mean()) if valid.size else 0.0,
        "pixels": total,
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """One line for logs: ``pixel accuracy 0.912, mean IoU 0.771 (pet 0.85, ...)``."""
    per_class = ", ".join(
        f"{name} {'n/a' if value is None else f'{value:.4f}'}"
        for name, value in metrics["iou"].items()
    )
    return (
        f"pixel accuracy {metrics['pixel_accuracy']:.4f}, mean IoU {metrics['mean_iou']:.4f} "
        f"(IoU {per_class})"
    )
