"""The training and evaluation splits of a run, chosen from its config.

Sources (``TrainConfig.source``):

- ``oxford_folder``: ``--data-dir`` in the Oxford layout; trains on
  ``annotations/trainval.txt``, evaluates on ``annotations/test.txt``.
- ``paired``: ``--images-dir``/``--masks-dir``; a fixed, seeded share
  (``val_fraction``) of the pairs is held out for evaluation.
- ``tfds``: TFDS ``oxford_iiit_pet``, its ``train`` and ``test`` splits (the tutorial's).
- ``synthetic``: generated pets; evaluation uses a disjoint seed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from petseg.training.config import TrainConfig
from petseg.training.data import (
    TRIMAP_TO_CLASS,
    DataSourceError,
    LabelledFile,
    checked_pairs,
    files_dataset,
    oxford_examples,
    parse_value_map,
    synthetic_dataset,
    tfds_dataset,
)

logger = logging.getLogger(__name__)


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
        original resolution); empty for generated data.
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
    pairs: tuple[LabelledFile, ...], val_fraction: float, seed: int
) -> tuple[list[LabelledFile], list[LabelledFile]]:
    # A fixed permutation of the sorted pairs: the same split on every run and resume.
    order = np.random.default_rng(seed).permutation(len(pairs))
    held_out = max(1, round(len(pairs) * val_fraction))
    if held_out >= len(pairs):
        raise DataSourceError(
            f"{len(pairs)} pair(s) cannot be split into training and evaluation; add more data"
        )
    shuffled = [pairs[index] for index in order]
    return shuffled[held_out:], sorted(shuffled[:held_out], key=lambda pair: pair.image_path)


def load_datasets(config: TrainConfig) -> Datasets:
    """The run's two splits.

    Raises:
      DataSourceError: the data cannot be found, read or downloaded.
      ValueError: a malformed ``mask_values``.
    """
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
