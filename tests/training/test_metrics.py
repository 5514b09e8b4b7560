"""Segmentation metrics: confusion-matrix arithmetic and the Keras metrics fed logits."""

import math

import numpy as np
import pytest
import tensorflow as tf

from petseg.training.metrics import (
    ClassIoU,
    MeanIoU,
    PixelAccuracy,
    confusion_matrix,
    format_metrics,
    iou_per_class,
    metrics_from_confusion,
    segmentation_metrics,
)

TRUE = np.array([[0, 0, 1, 1], [1, 1, 2, 2]])
PREDICTED = np.array([[0, 1, 1, 1], [1, 2, 2, 0]])
# rows = true class: 0 -> {0: 1, 1: 1}; 1 -> {1: 3, 2: 1}; 2 -> {2: 1, 0: 1}
EXPECTED_MATRIX = np.array([[1, 1, 0], [0, 3, 1], [1, 0, 1]])
# IoU = TP / (row + column - TP): pet 1/(2+2-1), background 3/(4+4-3), border 1/(2+2-1)
EXPECTED_IOU = [1 / 3, 3 / 5, 1 / 3]


def logits_for(predicted: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """Logits whose argmax is ``predicted``, with unequal non-winning scores."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, predicted.shape + (num_classes,)).astype(np.float32)
    np.put_along_axis(logits, predicted[..., None], 5.0, axis=-1)
    return logits


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    np.testing.assert_array_equal(confusion_matrix(TRUE, PREDICTED, 3), EXPECTED_MATRIX)


def test_confusion_matrix_skips_out_of_range_labels():
    true = np.array([0, 255, 1])
    predicted = np.array([0, 0, 2])
    matrix = confusion_matrix(true, predicted, 3)
    assert matrix.sum() == 2
    assert matrix[0, 0] == 1 and matrix[1, 2] == 1


def test_confusion_matrix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros(4), np.zeros(5), 3)


def test_metrics_from_confusion_by_hand():
    metrics = metrics_from_confusion(EXPECTED_MATRIX)
    assert metrics["pixel_accuracy"] == pytest.approx(5 / 8)
    assert list(metrics["iou"]) == ["pet", "background", "border"]
    assert list(metrics["iou"].values()) == pytest.approx(EXPECTED_IOU)
    assert metrics["mean_iou"] == pytest.approx(np.mean(EXPECTED_IOU))
    assert metrics["pixels"] == 8
    assert "mean IoU 0.4222" in format_metrics(metrics)


def test_absent_class_is_none_and_left_out_of_the_mean():
    matrix = np.array([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
    ious = iou_per_class(matrix)
    assert math.isnan(ious[2])
    metrics = metrics_from_confusion(matrix)
    assert metrics["iou"]["border"] is None
    assert metrics["mean_iou"] == pytest.approx((3 / 5 + 5 / 7) / 2)


def test_keras_metrics_take_logits_and_match_the_confusion_matrix():
    y_true = TRUE[None, ..., None].astype(np.uint8)
    y_pred = tf.constant(logits_for(PREDICTED)[None])
    values = {}
    for metric in segmentation_metrics():
        metric.update_state(y_true, y_pred)
        values[metric.name] = float(metric.result())
    assert values["pixel_accuracy"] == pytest.approx(5 / 8)
    assert [values["iou_pet"], values["iou_background"], values["iou_border"]] == pytest.approx(
        EXPECTED_IOU, abs=1e-6
    )
    assert values["mean_iou"] == pytest.approx(np.mean(EXPECTED_IOU), abs=1e-6)


def test_keras_metrics_ignore_sample_weights():
    """Class weights change the loss only; metrics keep counting pixels."""
    y_true = TRUE[None, ..., None].astype(np.uint8)
    y_pred = tf.constant(logits_for(PREDICTED)[None])
    weights = np.where(TRUE == 2, 10.0, 1.0)[None].astype(np.float32)
    for metric_type in (PixelAccuracy, lambda: ClassIoU(3, 2), lambda: MeanIoU(3)):
        plain, weighted = metric_type(), metric_type()
        plain.update_state(y_true, y_pred)
        weighted.update_state(y_true, y_pred, sample_weight=weights)
        assert float(weighted.result()) == pytest.approx(float(plain.result()))


def test_class_iou_config_round_trips():
    metric = ClassIoU(3, 2, name="iou_border")
    clone = ClassIoU.from_config(metric.get_config())
    assert clone.class_id == 2 and clone.name == "iou_border"
    assert list(clone.target_class_ids) == [2]
