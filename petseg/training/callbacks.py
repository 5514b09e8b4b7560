"""Keras callbacks of a training run and the files they leave in the workdir.

Layout of a workdir::

    backup/                          BackupAndRestore state (removed when the run completes)
    checkpoints/best.weights.h5      weights of the epoch with the best val mean IoU
    logs/history.csv                 one row per epoch (appended across resumes)
    logs/tensorboard/                TensorBoard event files
    plots/epoch_NNN.png              input | true | predicted panel of fixed validation images
    plots/curves.png                 loss, val loss, mean IoU per epoch
    plots/confusion_matrix.png       final evaluation
    export/                          SavedModel + model.keras + petseg.json
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from petseg.training.plots import save_prediction_panel

logger = logging.getLogger(__name__)

MONITOR = "val_mean_iou"


@dataclass(frozen=True)
class Workdir:
    """The paths of one training run's outputs."""

    root: str

    @property
    def backup(self) -> str:
        return os.path.join(self.root, "backup")

    @property
    def best_checkpoint(self) -> str:
        return os.path.join(self.root, "checkpoints", "best.weights.h5")

    @property
    def history_csv(self) -> str:
        return os.path.join(self.root, "logs", "history.csv")

    @property
    def tensorboard(self) -> str:
        return os.path.join(self.root, "logs", "tensorboard")

    @property
    def plots(self) -> str:
        return os.path.join(self.root, "plots")

    @property
    def export(self) -> str:
        return os.path.join(self.root, "export")

    def make(self) -> None:
        for folder in (
            os.path.dirname(self.best_checkpoint),
            os.path.dirname(self.history_csv),
            self.plots,
        ):
            os.makedirs(folder, exist_ok=True)

    def finished_epochs(self) -> int:
        """Epochs completed by an interrupted run, from BackupAndRestore's metadata (0: none)."""
        path = os.path.join(self.backup, "training_metadata.json")
        if not os.path.isfile(os.path.join(self.backup, "latest.weights.h5")):
            return 0
        try:
            with open(path, encoding="utf-8") as file:
                return int(json.load(file)["epoch"])
        except (OSError, ValueError, KeyError):
            return 0


def read_history(csv_path: str, before_epoch: int | None = None) -> dict[str, list[float]]:
    """Per-epoch logs from the CSV, one entry per epoch (the last row wins on repeats).

    A run killed between writing an epoch's row and backing it up repeats that
    epoch on resume; keeping the last row makes the history read as one run.

    Args:
      csv_path: ``logs/history.csv``.
      before_epoch: keep only 0-based epochs below this.

    Returns:
      ``{"epoch": [...], "loss": [...], ...}`` sorted by epoch; empty if no file.
    """
    if not os.path.isfile(csv_path):
        return {}
    rows: dict[int, dict[str, str]] = {}
    with open(csv_path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            try:
                epoch = int(row["epoch"])
            except (KeyError, TypeError, ValueError):
                continue
            if before_epoch is None or epoch < before_epoch:
                rows[epoch] = row
    keys = sorted({key for row in rows.values() for key in row if key})
    history: dict[str, list[float]] = {key: [] for key in keys}
    for epoch in sorted(rows):
        for key in keys:
            try:
                history[key].append(float(rows[epoch].get(key, "nan")))
            except ValueError:
                history[key].append(math.nan)
    return history


def best_so_far(history: dict[str, list[float]], monitor: str = MONITOR) -> float | None:
    """The best (highest) value of ``monitor`` in a history, None if it has none."""
    values = [value for value in history.get(monitor, []) if not math.isnan(value)]
    return max(values) if values else None


class PredictionPanel(keras.callbacks.Callback):
    """After each epoch, draws input | true mask | predicted mask for fixed validation images.

    The tutorial's ``DisplayCallback``, writing ``plots/epoch_NNN.png``
    (1-based epoch) instead of showing a notebook cell.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, plots_dir: str):
        super().__init__()
        self.images = np.asarray(images, np.float32)
        self.masks = np.asarray(masks)
        self.plots_dir = plots_dir

    def on_epoch_end(self, epoch, logs=None):
        if not len(self.images):
            return
        logits = self.model(self.images, training=False)
        predicted = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
        path = os.path.join(self.plots_dir, f"epoch_{epoch + 1:03d}.png")
        save_prediction_panel(self.images, self.masks, predicted, path, f"After epoch {epoch + 1}")


class EpochLog(keras.callbacks.Callback):
    """Logs one line per epoch with the validation metrics that matter."""

    def __init__(self, total_epochs: int, phase: str):
        super().__init__()
        self.total_epochs = total_epochs
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = ("loss", "val_loss", "val_pixel_accuracy", "val_mean_iou")
        text = ", ".join(f"{key} {logs[key]:.4f}" for key in shown if key in logs)
        logger.info("epoch %d/%d (%s): %s", epoch + 1, self.total_epochs, self.phase, text)


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which ``tf.summary`` writes through) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def training_callbacks(
    workdir: Workdir,
    total_epochs: int,
    phase: str,
    append_history: bool,
    best_threshold: float | None,
    panel: PredictionPanel | None,
    after_epoch: Callable[[], None] | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one ``fit`` call (one phase).

    ``BackupAndRestore`` keeps its state when a phase ends (the run deletes it
    after export), so a run killed in the fine-tuning phase resumes there
    instead of repeating the frozen phase. TensorBoard logs are written when
    the ``tensorboard`` package is installed (TensorFlow no longer pulls it
    in); the CSV holds the same numbers either way. BackupAndRestore comes last so an epoch's CSV row
    and checkpoint exist before the epoch counts as done; ``after_epoch`` (a push of the
    workdir to its bucket) runs after it, once the epoch's files are all written.
    """
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(workdir.history_csv, append=append_history),
        keras.callbacks.ModelCheckpoint(
            workdir.best_checkpoint,
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_threshold,
        ),
        EpochLog(total_epochs, phase),
    ]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(workdir.tensorboard, write_graph=False))
    if panel is not None:
        callbacks.append(panel)
    callbacks.append(keras.callbacks.BackupAndRestore(workdir.backup, delete_checkpoint=False))
    if after_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: after_epoch()))
    return callbacks
