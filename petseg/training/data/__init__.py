"""Data sources and input pipelines.

Every source yields the same ``tf.data`` element: ``(image uint8 [S, S, 3],
mask uint8 [S, S, 1])`` with class index = Oxford trimap value - 1
(0 pet, 1 background, 2 border). The sources: folders in the Oxford layout
(``oxford``) or paired by stem (``paired``), both read by ``files``; corrected
labels, a COCO file or a Label Studio export (``labels``); TFDS
(``tfds_source``); generated pets (``synthetic``).
"""

from petseg.training.data.files import DataSourceError, LabelledFile, files_dataset
from petseg.training.data.labels import (
    CocoRecord,
    LabelsReport,
    LabelStudioRecord,
    checked_labels,
    labels_dataset,
    read_label_file,
)
from petseg.training.data.oxford import TRIMAP_TO_CLASS, oxford_dataset, oxford_examples
from petseg.training.data.paired import (
    PairingReport,
    checked_pairs,
    pair_folders,
    paired_dataset,
    parse_value_map,
)
from petseg.training.data.pipeline import AugmentConfig, augment_pair, eval_batches, train_batches
from petseg.training.data.synthetic import (
    synthetic_dataset,
    synthetic_example,
    write_synthetic_files,
)
from petseg.training.data.tfds_source import tfds_dataset

__all__ = [
    "TRIMAP_TO_CLASS",
    "AugmentConfig",
    "CocoRecord",
    "DataSourceError",
    "LabelStudioRecord",
    "LabelledFile",
    "LabelsReport",
    "PairingReport",
    "augment_pair",
    "checked_labels",
    "checked_pairs",
    "eval_batches",
    "files_dataset",
    "labels_dataset",
    "oxford_dataset",
    "oxford_examples",
    "pair_folders",
    "paired_dataset",
    "parse_value_map",
    "read_label_file",
    "synthetic_dataset",
    "synthetic_example",
    "tfds_dataset",
    "train_batches",
    "write_synthetic_files",
]
