"""Scores an exported model on labelled images at their original resolution.

Each image is decoded at its own size, resized to the model's S x S, run
through the SavedModel's ``serving_default``; the class probabilities are
resized back to the original height and width and reduced with argmax
(:mod:`petseg.serving.upsample`, exactly as the Beam job does) and compared with
the original label map. The result is what users of the masks get, not a
score on squashed S x S labels.

Usage::

    python train.py evaluate --model runs/accuracy/export \\
        --data-dir ~/data/oxford-iiit-pet --split test
    petseg-evaluate --model runs/accuracy/export --images-dir imgs --masks-dir masks \\
        --mask-values 0:1,255:0
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from petseg.classes import CLASS_NAMES, DEFAULT_MASK_VALUES
from petseg.imageio import ImageDecodeError
from petseg.serving.backends import TENSORFLOW, choose_backend, load_runtime
from petseg.serving.export import read_model_info
from petseg.serving.upsample import probabilities_to_mask
from petseg.training.data.files import DataSourceError, LabelledFile, lookup_table, read_labelled
from petseg.training.data.oxford import TRIMAP_TO_CLASS, oxford_examples
from petseg.training.data.paired import pair_folders, parse_value_map
from petseg.training.metrics import confusion_matrix, metrics_from_confusion

logger = logging.getLogger(__name__)

# Probabilities for a chunk of images are computed in one model call; the
# upsampling then runs per image, since originals differ in size.
CHUNK = 16

Predictor = Callable[[np.ndarray], np.ndarray]
"""uint8 ``[N, S, S, 3]`` -> float32 probabilities ``[N, S, S, C]``."""


def serving_predictor(serving_function) -> Predictor:
    """Wraps a loaded ``serving_default`` signature as a :data:`Predictor`."""

    def predict(images: np.ndarray) -> np.ndarray:
        outputs = serving_function(images=tf.constant(images, tf.uint8))
        return outputs["probabilities"].numpy()

    return predict


def evaluate_examples(
    predict: Predictor,
    examples: Sequence[LabelledFile],
    image_size: int,
    value_map: dict[int, int],
    num_classes: int = len(CLASS_NAMES),
    each_mask: Callable[[np.ndarray], object] | None = None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Confusion matrix of ``predict`` over labelled files, at original resolution.

    Args:
      predict: model-size images -> probabilities.
      examples: image/label file pairs.
      image_size: the model's side S.
      value_map: stored label value -> class index.
      num_classes: C.
      each_mask: called with each predicted class map at original resolution, in order.

    Returns:
      ``(matrix int64 [C, C], skipped)`` where ``skipped`` lists
      ``(image_path, reason)`` of unreadable pairs (they are not counted).
    """
    table = lookup_table(value_map)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(examples), CHUNK):
        labelled = []
        for example in examples[start : start + CHUNK]:
            try:
                labelled.append(read_labelled(example, table, image_size))
            except (OSError, ImageDecodeError) as error:
                skipped.append((example.image_path, str(error)))
                logger.warning("skipping %s: %s", example.image_path, error)
        if not labelled:
            continue
        probabilities = predict(np.stack([pixels for pixels, _ in labelled]))
        for (_, mask), image_probabilities in zip(labelled, probabilities, strict=True):
            predicted = probabilities_to_mask(image_probabilities, mask.shape)
            matrix += confusion_matrix(mask, predicted, num_classes)
            if each_mask is not None:
                each_mask(predicted)
    return matrix, skipped


def default_output(model_dir: str, split: str) -> str:
    """``<model_dir>/../eval_<split>.json``: beside the export, inside the workdir."""
    return os.path.join(os.path.dirname(os.path.abspath(model_dir)), f"eval_{split}.json")


def _labelled_examples(data_dir, split, images_dir, masks_dir, mask_values):
    """``(examples, mask value -> class, split name)`` of an Oxford split or a paired folder."""
    if not images_dir:
        return oxford_examples(data_dir, split), TRIMAP_TO_CLASS, split
    if not masks_dir:
        raise DataSourceError("--images-dir needs --masks-dir")
    try:
        value_map = parse_value_map(mask_values)
    except ValueError as error:
        raise DataSourceError(str(error)) from None
    return list(pair_folders(images_dir, masks_dir).pairs), value_map, "paired"


def _check_labels(value_map: dict[int, int], info) -> None:
    if max(value_map.values()) >= info.num_classes:
        raise DataSourceError(
            f"labels map to class {max(value_map.values())} but the model has "
            f"{info.num_classes} classes {info.class_names}"
        )


def evaluate_export(
    model_dir: str,
    data_dir: str | None = None,
    split: str = "test",
    images_dir: str | None = None,
    masks_dir: str | None = None,
    mask_values: str = DEFAULT_MASK_VALUES,
    backend: str = TENSORFLOW,
) -> dict[str, Any]:
    """Scores an export on an Oxford-layout split or on a paired folder.

    Args:
      model_dir: a ``train.py`` export (SavedModel + ``petseg.json``).
      data_dir: Oxford-layout folder; ``split`` picks its list (``test``, ``trainval``, ``all``).
      split: the Oxford split.
      images_dir: instead of ``data_dir``, a folder of images ...
      masks_dir: ... and their masks, matched by file stem.
      mask_values: stored mask value -> class index for paired masks.
      backend: the runtime that runs the model (``auto``: :func:`choose_backend`'s pick).

    Returns:
      ``{"pixel_accuracy", "iou": {class: IoU}, "mean_iou", "pixels", "images",
      "skipped", "confusion_matrix", "class_names", "model_id", "split",
      "resolution": "original", "backend", "seconds"}``.

    Raises:
      ExportError: the model directory is not a usable export.
      DataSourceError: the data cannot be read or does not match the model's classes.
    """
    started = time.perf_counter()
    if bool(data_dir) == bool(images_dir):
        raise DataSourceError("give either --data-dir (Oxford layout) or --images-dir/--masks-dir")
    backend = choose_backend(backend, read_model_info(model_dir))
    runtime, info = load_runtime(model_dir, backend)
    examples, value_map, split = _labelled_examples(
        data_dir, split, images_dir, masks_dir, mask_values
    )
    _check_labels(value_map, info)
    matrix, skipped = evaluate_examples(
        runtime.probabilities, examples, info.image_size, value_map, info.num_classes
    )
    if len(skipped) == len(examples):
        raise DataSourceError(f"none of the {len(examples)} images could be read")
    return {
        **metrics_from_confusion(matrix, info.class_names),
        "images": len(examples) - len(skipped),
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        "confusion_matrix": matrix.tolist(),
        "class_names": list(info.class_names),
        "model_id": info.model_id,
        "model_dir": os.path.abspath(model_dir),
        "data": os.path.abspath(data_dir or images_dir),
        "split": split,
        "resolution": "original",
        "backend": backend,
        "seconds": round(time.perf_counter() - started, 1),
    }
