"""The training and evaluation splits of a run, chosen from its config.

Sources (``TrainConfig.source``):

- ``oxford_folder``: ``--data-dir`` in the Oxford layout; trains on
  ``annotations/trainval.txt``, evaluates on ``annotations/test.txt``.
- ``paired``: ``--images-dir``/``--masks-dir``; a fixed, seeded share
  (``val_fraction``) of the pairs is held out for evaluation.
- ``tfds``: TFDS ``oxford_iiit_pet``, its ``train`` and ``test`` splits (the tutorial's).
- ``synthetic``: generated pets; evaluation uses a disjoint seed.
- ``labels``: ``--labels`` alone (COCO files, Label Studio exports); held out
  like the paired source.

``--labels`` beside ``--data-dir`` or ``--images-dir`` adds the corrected
labels to the training split only: the evaluation split stays the folder's,
so scores stay comparable with runs trained without them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import tensorflow as tf

from petseg.training.config import TrainConfig
from petseg.training.data import (
    TRIMAP_TO_CLASS,
    CocoRecord,
    DataSourceError,
    LabelledFile,
    LabelsReport,
    LabelStudioRecord,
    checked_labels,
    checked_pairs,
    files_dataset,
    labels_dataset,
    oxford_examples,
    parse_value_map,
    synthetic_dataset,
    tfds_dataset,
)

logger = logging.getLogger(__name__)

# What a split holds: files on disk, or records of a label file.
Example = TypeVar("Example", LabelledFile, CocoRecord, LabelStudioRecord)


@dataclass(frozen=True)
class Datasets:
    """Both splits as unbatched ``(image uint8 [S, S, 3], mask uint8 [S, S, 1])`` datasets.

    Attributes:
      train: the training split.
      eval: the evaluation split, in a fixed order.
      num_train: training examples (sets the default steps per epoch).
      num_eval: evaluation examples.
      description: where the data came from, for logs and ``petseg.json``.
      eval_split: the evaluation split's name.
      eval_files: the evaluation pairs on disk, when there are files (scored at
        original resolution); empty for generated data and for ``--labels`` alone.
      value_map: stored label value -> class index of ``eval_files``.
    """

    train: tf.data.Dataset
    eval: tf.data.Dataset
    num_train: int
    num_eval: int
    description: str
    eval_split: str
    eval_files: tuple[LabelledFile, ...] = ()
    value_map: Mapping[int, int] = field(default_factory=dict)

    def panel(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``count`` evaluation examples: fixed images for the per-epoch pictures."""
        if count < 1:
            return np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0, 1, 1, 1), np.uint8)
        pairs = list(self.eval.take(count).as_numpy_iterator())
        if not pairs:
            return np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0, 1, 1, 1), np.uint8)
        return np.stack([image for image, _ in pairs]), np.stack([mask for _, mask in pairs])


def _split_pairs(
    pairs: Sequence[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    # A fixed permutation of the sorted pairs: the same split on every run and resume.
    order = np.random.default_rng(seed).permutation(len(pairs))
    held_out = max(1, round(len(pairs) * val_fraction))
    if held_out >= len(pairs):
        raise DataSourceError(
            f"{len(pairs)} example(s) cannot be split into training and evaluation; add more data"
        )
    shuffled = [pairs[index] for index in order]
    return shuffled[held_out:], sorted(shuffled[:held_out], key=lambda pair: pair.image_path)


def load_datasets(config: TrainConfig) -> Datasets:
    """The run's two splits, with ``config.labels`` in the training split.

    Raises:
      DataSourceError: the data cannot be found, read or downloaded.
      ValueError: a malformed ``mask_values``.
    """
    # The label files first: reading them is quick, and a bad one should not
    # wait for a strict check of a whole folder.
    reports = checked_labels(config.labels or (), config.labels_image_root, config.strict)
    if config.source == "labels":
        return _labels_datasets(config, reports)
    datasets = _source_datasets(config)
    if not reports:
        return datasets
    records = [record for report in reports for record in report.records]
    return dataclasses.replace(
        datasets,
        train=_interleaved(
            datasets.train,
            labels_dataset(records, config.image_size, config.strict),
            datasets.num_train,
            len(records),
            config.seed,
        ),
        num_train=datasets.num_train + len(records),
        description=f"{datasets.description} + {_labels_description(reports)} (training only)",
    )


def _source_datasets(config: TrainConfig) -> Datasets:
    """The splits of the source other than ``--labels``."""
    size = config.image_size
    source = config.source
    if source == "synthetic":
        num_eval = max(2, config.synthetic_count // 4)
        return Datasets(
            train=synthetic_dataset(config.synthetic_count, size, config.seed),
            eval=synthetic_dataset(num_eval, size, config.seed + 1_000_003),
            num_train=config.synthetic_count,
            num_eval=num_eval,
            description=f"synthetic ({config.synthetic_count} + {num_eval})",
            eval_split="synthetic",
        )
    if source == "tfds":
        train = tfds_dataset("train", size, config.tfds_data_dir)
        evaluation = tfds_dataset("test", size, config.tfds_data_dir)
        return Datasets(
            train=train,
            eval=evaluation,
            num_train=int(train.cardinality()),
            num_eval=int(evaluation.cardinality()),
            description="tfds oxford_iiit_pet train/test",
            eval_split="test",
        )
    if source == "paired":
        value_map = parse_value_map(config.mask_values)
        report = checked_pairs(config.images_dir, config.masks_dir, config.strict)
        train_pairs, eval_pairs = _split_pairs(report.pairs, config.val_fraction, config.seed)
        return _file_datasets(
            config,
            train_pairs,
            eval_pairs,
            value_map,
            f"paired {config.images_dir} + {config.masks_dir}",
            "held-out",
        )
    return _file_datasets(
        config,
        oxford_examples(config.data_dir, "trainval"),
        oxford_examples(config.data_dir, "test"),
        TRIMAP_TO_CLASS,
        f"oxford folder {config.data_dir} trainval/test",
        "test",
    )


def _file_datasets(
    config: TrainConfig,
    train_files: list[LabelledFile],
    eval_files: list[LabelledFile],
    value_map: Mapping[int, int],
    description: str,
    eval_split: str,
) -> Datasets:
    size = config.image_size
    return Datasets(
        train=files_dataset(train_files, size, value_map, config.strict),
        eval=files_dataset(eval_files, size, value_map, config.strict),
        num_train=len(train_files),
        num_eval=len(eval_files),
        description=description,
        eval_split=eval_split,
        eval_files=tuple(eval_files),
        value_map=value_map,
    )


def _labels_description(reports: Sequence[LabelsReport]) -> str:
    """``labels a.json (12), b.json (5)``: each label file and its examples."""
    return "labels " + ", ".join(f"{report.path} ({len(report.records)})" for report in reports)


def _labels_datasets(config: TrainConfig, reports: Sequence[LabelsReport]) -> Datasets:
    """``--labels`` alone: a fixed, seeded share of the records is held out for evaluation."""
    records = [record for report in reports for record in report.records]
    train, held_out = _split_pairs(records, config.val_fraction, config.seed)
    size = config.image_size
    return Datasets(
        train=labels_dataset(train, size, config.strict),
        eval=labels_dataset(held_out, size, config.strict),
        num_train=len(train),
        num_eval=len(held_out),
        description=f"{_labels_description(reports)}; {len(held_out)} held out",
        eval_split="held-out",
    )


def _interleaved(
    original: tf.data.Dataset,
    labelled: tf.data.Dataset,
    num_original: int,
    num_labelled: int,
    seed: int,
) -> tf.data.Dataset:
    """Both datasets as one, the labelled examples spread through it in a fixed, seeded order.

    Appended at the end instead, they would reach a shuffle buffer smaller than
    the set only in the last stretch of every pass.
    """
    sources = np.repeat(np.array([0, 1], np.int64), [num_original, num_labelled])
    order = np.random.default_rng(seed).permutation(sources)
    return tf.data.Dataset.choose_from_datasets(
        [original, labelled],
        tf.data.Dataset.from_tensor_slices(order),
        # A skipped bad example leaves its source short; the other one goes on.
        stop_on_empty_dataset=False,
    )
