"""Image/label file pairs on disk -> the common ``tf.data`` element.

Oxford-layout and paired folders both reduce to a list of
:class:`LabelledFile` plus a mapping from stored label values to class
indices; this module turns that into a dataset. A pair that cannot be read
is logged and skipped (or, with ``strict``, refused before training starts),
so one bad file never crashes an epoch.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from petseg.imageio import (
    ImageDecodeError,
    decode_image,
    decode_mask,
    decode_resized,
    resize_mask,
)

logger = logging.getLogger(__name__)

UNMAPPED = 255


class DataSourceError(ValueError):
    """A data source that cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class LabelledFile:
    """One training example on disk: an image and its label map."""

    image_path: str
    mask_path: str


def lookup_table(value_map: Mapping[int, int]) -> np.ndarray:
    """A 256-entry table from stored label value to class index (255 = unmapped)."""
    table = np.full(256, UNMAPPED, dtype=np.uint8)
    for stored, class_index in value_map.items():
        if not (0 <= stored <= 255 and 0 <= class_index < UNMAPPED):
            raise ValueError(f"label mapping {stored}->{class_index} is out of range")
        table[stored] = class_index
    return table


def read_regular_file(path: str) -> bytes:
    """A file's bytes, refusing FIFOs, sockets and devices (reading a FIFO blocks forever).

    Raises:
      OSError: the file cannot be read (missing, a broken or looping link, denied).
      ImageDecodeError: the path is not a regular file.
    """
    with open(path, "rb", opener=_open_nonblocking) as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ImageDecodeError(f"{path} is not a regular file")
        return file.read()


def _open_nonblocking(path: str, flags: int) -> int:
    # O_NONBLOCK lets a FIFO without a writer open at once instead of hanging the
    # epoch; it changes nothing for regular files.
    return os.open(path, flags | os.O_NONBLOCK)


def read_labelled(
    example: LabelledFile, table: np.ndarray, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one pair and maps its labels; the label map stays at full size.

    Args:
      example: the image and label files.
      table: stored label value -> class index (see :func:`lookup_table`).
      image_size: give the image as the model's S x S input
        (:func:`petseg.imageio.decode_resized`, as the Beam job does);
        ``None`` keeps it at full size.

    Returns:
      ``(image uint8 [S, S, 3] or [H, W, 3], class map uint8 [H, W])``.

    Raises:
      ImageDecodeError: either file is unreadable, sizes differ, or the mask
        holds values the mapping does not know.
    """
    image_data = read_regular_file(example.image_path)
    raw = decode_mask(read_regular_file(example.mask_path))
    if image_size is None:
        image = decode_image(image_data)
        height, width = image.shape[:2]
    else:
        image, (height, width) = decode_resized(image_data, image_size)
    if raw.shape != (height, width):
        raise ImageDecodeError(
            f"mask is {raw.shape[1]}x{raw.shape[0]} but image is {width}x{height}"
        )
    mask = table[raw]
    if (mask == UNMAPPED).any():
        unknown = sorted(set(np.unique(raw[mask == UNMAPPED]).tolist()))[:5]
        raise ImageDecodeError(f"mask values {unknown} are not in the label mapping")
    return image, mask


def read_pair(
    example: LabelledFile, table: np.ndarray, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one pair and maps its labels; optionally both at ``image_size``.

    Returns:
      ``(image uint8 [H, W, 3], mask uint8 [H, W, 1])``, H = W = ``image_size`` if given.

    Raises:
      ImageDecodeError: as :func:`read_labelled`.
    """
    image, mask = read_labelled(example, table, image_size)
    if image_size is not None:
        mask = resize_mask(mask, image_size)
    return image, mask[:, :, None]


def check_pairs(examples: Sequence[LabelledFile], table: np.ndarray) -> list[tuple[str, str]]:
    """Reads every pair once; returns ``(image_path, reason)`` for the bad ones."""
    bad = []
    for example in examples:
        try:
            read_pair(example, table)
        except (OSError, ImageDecodeError) as error:
            bad.append((example.image_path, str(error)))
    return bad


def files_dataset(
    examples: Sequence[LabelledFile],
    image_size: int,
    value_map: Mapping[int, int],
    strict: bool = False,
) -> tf.data.Dataset:
    """A dataset of resized ``(image, mask)`` pairs read from ``examples``.

    Args:
      examples: the pairs, in a fixed order.
      image_size: side S of the square outputs.
      value_map: stored label value -> class index.
      strict: read every pair first and raise on the first bad one, instead
        of logging and skipping bad pairs while iterating.

    Raises:
      DataSourceError: no examples, or ``strict`` and a pair is bad.
    """
    if not examples:
        raise DataSourceError("no image/label pairs to read")
    table = lookup_table(value_map)
    if strict:
        bad = check_pairs(examples, table)
        if bad:
            path, reason = bad[0]
            raise DataSourceError(f"{len(bad)} bad image/label pair(s), first {path}: {reason}")

    # As bytes: a file name that is not valid UTF-8 cannot become a tf.string otherwise.
    image_paths = [os.fsencode(example.image_path) for example in examples]
    mask_paths = [os.fsencode(example.mask_path) for example in examples]

    def load(image_path: bytes, mask_path: bytes):
        example = LabelledFile(os.fsdecode(image_path), os.fsdecode(mask_path))
        try:
            image, mask = read_pair(example, table, image_size)
            return image, mask, True
        except (OSError, ImageDecodeError) as error:
            logger.warning("skipping %s: %s", example.image_path, error)
            empty = np.zeros((image_size, image_size, 3), np.uint8)
            return empty, np.zeros((image_size, image_size, 1), np.uint8), False

    def load_tensors(image_path, mask_path):
        image, mask, ok = tf.numpy_function(
            load, [image_path, mask_path], [tf.uint8, tf.uint8, tf.bool], stateful=False
        )
        image.set_shape([image_size, image_size, 3])
        mask.set_shape([image_size, image_size, 1])
        ok.set_shape([])
        return image, mask, ok

    dataset = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    dataset = dataset.map(load_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(lambda image, mask, ok: ok)
    return dataset.map(lambda image, mask, ok: (image, mask))
