"""Training pictures: prediction panels, learning curves, confusion matrix (PNG files).

Matplotlib runs on the Agg backend (files only, no display), so these work on
headless training machines. Each function draws one figure, saves it, and
closes it so long runs do not accumulate open figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from petseg.classes import CLASS_NAMES  # noqa: E402
from petseg.drawing import colourise  # noqa: E402


def _save(figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path


def save_prediction_panel(
    images: np.ndarray,
    true_masks: np.ndarray,
    predicted_masks: np.ndarray,
    path: str,
    title: str = "",
) -> str:
    """One row per example: input image | true mask | predicted mask (the tutorial's display).

    Args:
      images: ``[N, S, S, 3]`` pixels in 0-255.
      true_masks: ``[N, S, S]`` or ``[N, S, S, 1]`` class indices.
      predicted_masks: ``[N, S, S]`` class indices.
      path: PNG to write.
      title: figure title (e.g. the epoch).

    Returns:
      ``path``.
    """
    count = len(images)
    figure, axes = plt.subplots(count, 3, figsize=(9, 3 * count), squeeze=False)
    for row in range(count):
        columns = (
            np.clip(np.asarray(images[row]), 0, 255).astype(np.uint8),
            colourise(true_masks[row]),
            colourise(predicted_masks[row]),
        )
        for column, (picture, heading) in enumerate(
            zip(columns, ("Input Image", "True Mask", "Predicted Mask"), strict=True)
        ):
            axes[row, column].imshow(picture)
            axes[row, column].axis("off")
            if row == 0:
                axes[row, column].set_title(heading)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def save_curves(history: Mapping[str, Sequence[float]], path: str, fine_tune_start: int = 0) -> str:
    """Loss, validation loss and mean IoU against epoch.

    Args:
      history: per-epoch values keyed by Keras log name (``epoch`` 0-based,
        ``loss``, ``val_loss``, ``mean_iou``, ``val_mean_iou``...); absent keys are skipped.
      path: PNG to write.
      fine_tune_start: first fine-tuning epoch (1-based); a dashed line marks it when > 0.

    Returns:
      ``path``.
    """
    epochs = np.asarray(history.get("epoch", range(len(history.get("loss", [])))), float) + 1
    figure, (loss_axis, iou_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style, label in (
        ("loss", "r-", "Training loss"),
        ("val_loss", "bo-", "Validation loss"),
    ):
        if history.get(key):
            loss_axis.plot(epochs, history[key], style, label=label, markersize=3)
    for key, style, label in (
        ("mean_iou", "r-", "Training mean IoU"),
        ("val_mean_iou", "bo-", "Validation mean IoU"),
        ("val_pixel_accuracy", "g.-", "Validation pixel accuracy"),
    ):
        if history.get(key):
            iou_axis.plot(epochs, history[key], style, label=label, markersize=3)
    for axis, heading in ((loss_axis, "Loss"), (iou_axis, "Mean IoU")):
        if fine_tune_start > 0:
            axis.axvline(fine_tune_start - 0.5, color="grey", linestyle="--", label="fine-tuning")
        axis.set_xlabel("Epoch")
        axis.set_title(heading)
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend()
    iou_axis.set_ylim(0, 1)
    return _save(figure, path)


def save_confusion_matrix(
    matrix: np.ndarray, path: str, class_names: Sequence[str] = CLASS_NAMES, title: str = ""
) -> str:
    """Row-normalised confusion matrix (true class per row) with the pixel counts.

    Returns:
      ``path``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    figure, axis = plt.subplots(figsize=(5, 4.5))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names)
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("Predicted class")
    axis.set_ylabel("True class")
    for i in ticks:
        for j in ticks:
            axis.text(
                j,
                i,
                f"{shares[i, j]:.2f}\n{int(matrix[i, j]):,}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    axis.set_title(title or "Confusion matrix (rows: true class)")
    return _save(figure, path)
