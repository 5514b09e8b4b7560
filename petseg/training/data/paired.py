"""A generic paired folder: images and masks matched by file stem (Carvana-style).

Users bring their own data as ``images/cat_01.jpg`` + ``masks/cat_01.png``
(or ``cat_01_mask.gif``); a value mapping turns stored mask values into
class indices, e.g. ``0:1,255:0`` for a 0/255 foreground mask. Files without
a partner are reported, never silently dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import tensorflow as tf

from petseg.imageio import IMAGE_EXTENSIONS
from petseg.training.data.files import DataSourceError, LabelledFile, files_dataset

logger = logging.getLogger(__name__)

MASK_SUFFIXES = ("_mask", "-mask", "_label", "_trimap")


@dataclass(frozen=True)
class PairingReport:
    """The outcome of matching two folders by stem."""

    pairs: tuple[LabelledFile, ...]
    images_without_mask: tuple[str, ...] = field(default=())
    masks_without_image: tuple[str, ...] = field(default=())
    duplicate_stems: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        return (
            f"{len(self.pairs)} pairs; {len(self.images_without_mask)} images without a mask, "
            f"{len(self.masks_without_image)} masks without an image, "
            f"{len(self.duplicate_stems)} ambiguous stems"
        )


def parse_value_map(text: str) -> dict[int, int]:
    """Parses ``"0:1,255:0"`` into ``{0: 1, 255: 0}``.

    Raises:
      ValueError: malformed text, showing what was received.
    """
    mapping = {}
    for item in text.split(","):
        stored, sep, class_index = item.strip().partition(":")
        if not sep:
            raise ValueError(f"value map entries look like STORED:CLASS, got {item!r} in {text!r}")
        try:
            mapping[int(stored)] = int(class_index)
        except ValueError:
            raise ValueError(f"value map entries must be integers, got {item!r}") from None
    return mapping


def _stems(folder: str, strip_suffixes: bool) -> tuple[dict[str, str], list[str]]:
    by_stem: dict[str, str] = {}
    duplicates = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        stem, extension = os.path.splitext(name)
        if name.startswith(".") or extension.lower().lstrip(".") not in IMAGE_EXTENSIONS:
            continue
        # Folders are skipped; anything else, even a broken link, FIFO or unreadable
        # file, stays a candidate so that reading it reports the problem.
        if os.path.isdir(path):
            continue
        if strip_suffixes:
            for suffix in MASK_SUFFIXES:
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
        if stem in by_stem:
            duplicates.append(stem)
            continue
        by_stem[stem] = path
    return by_stem, duplicates


def pair_folders(images_dir: str, masks_dir: str) -> PairingReport:
    """Matches images to masks by stem and reports everything left over.

    Raises:
      DataSourceError: a folder is missing or nothing pairs up.
    """
    for folder in (images_dir, masks_dir):
        if not os.path.isdir(folder):
            raise DataSourceError(f"folder not found: {folder}")
    images, image_duplicates = _stems(images_dir, strip_suffixes=False)
    masks, mask_duplicates = _stems(masks_dir, strip_suffixes=True)
    common = sorted(images.keys() & masks.keys())
    report = PairingReport(
        pairs=tuple(LabelledFile(images[stem], masks[stem]) for stem in common),
        images_without_mask=tuple(images[stem] for stem in sorted(images.keys() - masks.keys())),
        masks_without_image=tuple(masks[stem] for stem in sorted(masks.keys() - images.keys())),
        duplicate_stems=tuple(sorted(set(image_duplicates + mask_duplicates))),
    )
    if not report.pairs:
        raise DataSourceError(
            f"no image in {images_dir} has a mask of the same name in {masks_dir}"
        )
    return report


def checked_pairs(images_dir: str, masks_dir: str, strict: bool = False) -> PairingReport:
    """Pairs two folders and reports leftovers: logged, or refused with ``strict``.

    Raises:
      DataSourceError: nothing pairs up, or ``strict`` and some file has no partner.
    """
    report = pair_folders(images_dir, masks_dir)
    unpaired = len(report.images_without_mask) + len(report.masks_without_image)
    if unpaired or report.duplicate_stems:
        if strict:
            raise DataSourceError(
                f"unpaired files in {images_dir} / {masks_dir}: {report.summary()}"
            )
        logger.warning("pairing %s with %s: %s", images_dir, masks_dir, report.summary())
        for path in report.images_without_mask + report.masks_without_image:
            logger.warning("no partner for %s", path)
    return report


def paired_dataset(
    images_dir: str,
    masks_dir: str,
    image_size: int,
    value_map: Mapping[int, int],
    strict: bool = False,
) -> tuple[tf.data.Dataset, PairingReport]:
    """The common ``(image, mask)`` dataset from a paired folder, with its pairing report.

    Raises:
      DataSourceError: nothing pairs up, or ``strict`` and some file has no partner.
    """
    report = checked_pairs(images_dir, masks_dir, strict)
    return files_dataset(report.pairs, image_size, value_map, strict), report
