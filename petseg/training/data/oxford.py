"""The Oxford-IIIT Pet download, unpacked: ``images/``, ``annotations/trimaps/``, split lists."""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from petseg.training.data.files import DataSourceError, LabelledFile, files_dataset

logger = logging.getLogger(__name__)

# Trimaps store 1 pet, 2 background, 3 border; the class index is trimap - 1.
TRIMAP_TO_CLASS = {1: 0, 2: 1, 3: 2}
SPLITS = ("trainval", "test", "all")


def oxford_examples(root: str, split: str = "trainval") -> list[LabelledFile]:
    """Lists the image/trimap pairs of one split of an Oxford-layout folder.

    Args:
      root: folder holding ``images/`` and ``annotations/``.
      split: ``trainval`` or ``test`` (from ``annotations/<split>.txt``), or
        ``all`` for every image that has a trimap.

    Raises:
      DataSourceError: the folder is not in the Oxford layout.
    """
    if split not in SPLITS:
        raise DataSourceError(f"split must be one of {SPLITS}, got {split!r}")
    images_dir = os.path.join(root, "images")
    trimaps_dir = os.path.join(root, "annotations", "trimaps")
    for folder in (images_dir, trimaps_dir):
        if not os.path.isdir(folder):
            raise DataSourceError(
                f"{root} is not an Oxford-IIIT Pet folder: {folder} is missing "
                "(expected images/ and annotations/trimaps/ as in the official download)"
            )
    if split == "all":
        names = sorted(
            os.path.splitext(name)[0]
            for name in os.listdir(trimaps_dir)
            if name.endswith(".png") and not name.startswith(".")
        )
    else:
        list_path = os.path.join(root, "annotations", f"{split}.txt")
        if not os.path.isfile(list_path):
            raise DataSourceError(f"{list_path} is missing: cannot tell which images form {split}")
        with open(list_path, encoding="utf-8") as file:
            # Lines are "<name> <class-id> <species> <breed-id>"; '#' starts a comment.
            names = [line.split()[0] for line in file if line.strip() and not line.startswith("#")]
    examples = [
        LabelledFile(
            os.path.join(images_dir, f"{name}.jpg"), os.path.join(trimaps_dir, f"{name}.png")
        )
        for name in names
    ]
    # lexists, not isfile: a broken link or a FIFO is kept, so reading it reports
    # the pair as bad instead of dropping it without a word.
    present = [
        ex for ex in examples if os.path.lexists(ex.image_path) and os.path.lexists(ex.mask_path)
    ]
    if len(present) < len(examples):
        logger.warning(
            "%d of the %d images listed for split %r have no image or trimap file under %s",
            len(examples) - len(present),
            len(examples),
            split,
            root,
        )
    if not present:
        raise DataSourceError(f"no image/trimap pairs found for split {split!r} under {root}")
    return present


def oxford_dataset(root: str, split: str, image_size: int, strict: bool = False) -> tf.data.Dataset:
    """The common ``(image, mask)`` dataset from an Oxford-layout folder."""
    return files_dataset(oxford_examples(root, split), image_size, TRIMAP_TO_CLASS, strict)
