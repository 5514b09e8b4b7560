"""The records that travel between the segmentation job's steps.

Plain frozen dataclasses: Beam pickles them between stages, and every field
is a path, a number or a numpy array, so nothing here needs a custom coder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

# The tag of every step's error records, beside its main output.
ERRORS_TAG = "errors"

# Beam metrics namespace of the job's counters (read, decoded, failed, masks_written, pixels_*).
COUNTER_NAMESPACE = "petseg"
# Stages an input can fail at, in pipeline order; errors JSON Lines name one of them.
STAGES: tuple[str, ...] = ("match", "read", "decode", "postprocess", "write")


@dataclass(frozen=True)
class SourceImage:
    """One matched input file.

    Attributes:
      path: the file's full path or URL, as the filesystem listed it.
      relative: its path below the input root it was matched under.
      size_bytes: its size from the listing (refused before reading when too big).
      mask_path: its mask's path relative to OUT (``masks/...png``), once assigned.
      refused: why the listing refuses to read it (a link leading outside its
        input folder, a FIFO or socket); empty for a file the job may read.
    """

    path: str
    relative: str
    size_bytes: int = 0
    mask_path: str = ""
    refused: str = ""


@dataclass(frozen=True)
class ImageKey:
    """What RunInference carries beside each image, so results keep their origin.

    Attributes:
      source: the input file.
      height: the decoded (EXIF-upright) image's height.
      width: its width.
      original: the decoded image itself, kept only when overlays are drawn.
    """

    source: SourceImage
    height: int
    width: int
    original: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Segmentation:
    """A model's answer for one image, at the image's own size.

    Attributes:
      key: where the image came from.
      mask: ``uint8 [H, W]`` class indices.
      mean_confidence: mean over pixels of the winning class's probability.
      class_confidence: each class's mean probability over the pixels given
        that class, when the job writes COCO (their scores); else empty.
    """

    key: ImageKey
    mask: np.ndarray = field(compare=False, repr=False)
    mean_confidence: float
    class_confidence: tuple[float, ...] = ()


@dataclass(frozen=True)
class ErrorRecord:
    """An input that produced no mask, and why (contract 6)."""

    path: str
    stage: str
    error_type: str
    message: str

    @classmethod
    def from_exception(cls, path: str, stage: str, error: BaseException) -> ErrorRecord:
        """The record of ``error`` raised while handling ``path`` at ``stage``."""
        return cls(path, stage, type(error).__name__, str(error) or repr(error))

    def to_json(self) -> str:
        """One JSON Lines line (sorted keys, so reruns write identical bytes)."""
        return json.dumps(
            {
                "path": self.path,
                "stage": self.stage,
                "error_type": self.error_type,
                "message": self.message,
            },
            sort_keys=True,
        )


def error_line(error: ErrorRecord) -> tuple[str, str]:
    """``(sort key, JSON line)`` of an error, for :class:`petseg.beam.write.WriteTable`."""
    return error.path, error.to_json()
