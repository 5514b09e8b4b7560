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

from petseg.config import TrainConfig
from petseg.data import (
    TRIMAP_TO_CLASS,
    DataSourceError,
    LabelledFile,
    files_dataset,
    oxford_examples,
    pair_folders,
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
        report = pair_folders(config.images_dir, config.masks_dir)
        if report.images_without_mask or report.masks_without_image or report.duplicate_stems:
            if config.strict:
                raise DataSourceError(f"unpaired files: {report.summary()}")
            logger.warning("pairing %s: %s", config.images_dir, report.summary())
        train_pairs, eval_pairs = _split_pairs(report.pairs, config.val_fraction, config.seed)
        return Datasets(
            train=files_dataset(train_pairs, size, value_map, config.strict),
            eval=files_dataset(eval_pairs, size, value_map, config.strict),
            num_train=len(train_pairs),
            num_eval=len(eval_pairs),
            description=f"paired {config.images_dir} + {config.masks_dir}",
            eval_split="held-out",
            eval_files=tuple(eval_pairs),
            value_map=value_map,
        )
    train_files = oxford_examples(config.data_dir, "trainval")
    eval_files = oxford_examples(config.data_dir, "test")
    return Datasets(
        train=files_dataset(train_files, size, TRIMAP_TO_CLASS, config.strict),
        eval=files_dataset(eval_files, size, TRIMAP_TO_CLASS, config.strict),
        num_train=len(train_files),
        num_eval=len(eval_files),
        description=f"oxford folder {config.data_dir} trainval/test",
        eval_split="test",
        eval_files=tuple(eval_files),
        value_map=TRIMAP_TO_CLASS,
    )
