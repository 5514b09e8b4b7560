"""Reading, decoding and resizing images, with a dead letter for anything that fails.

Every file goes through :func:`petseg.imageio.decode_image`, the decoder
training uses, so the model sees pixels prepared exactly as it was trained.
Nothing a file holds can fail a bundle: each failure becomes an
:class:`~petseg.beam.records.ErrorRecord` on the ``errors`` output.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from petseg.beam.io import ERRORS_TAG
from petseg.beam.records import COUNTER_NAMESPACE, ErrorRecord, ImageKey, SourceImage
from petseg.imageio import DEFAULT_MAX_PIXELS, decode_image, resize_image

# A file this big is no photo; refusing it before reading keeps a worker's memory safe.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024


class FileTooLargeError(ValueError):
    """A file bigger than the job's byte limit."""


def read_file(path: str, max_bytes: int) -> bytes:
    """Reads a whole file through Beam's filesystems, refusing more than ``max_bytes``.

    Raises:
      FileTooLargeError: the file holds more than ``max_bytes`` bytes.
      OSError: (or a filesystem's own error) the file cannot be read.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLargeError(f"file is larger than the limit of {max_bytes} bytes")
    return data


class DecodeImageFn(beam.DoFn):
    """``SourceImage`` -> ``(SourceImage, uint8 [H, W, 3])``; failures go to ``errors``."""

    def __init__(
        self, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ):
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._read = Metrics.counter(COUNTER_NAMESPACE, "read")
        self._decoded = Metrics.counter(COUNTER_NAMESPACE, "decoded")

    def _fail(self, source: SourceImage, stage: str, error: BaseException):
        return beam.pvalue.TaggedOutput(
            ERRORS_TAG, ErrorRecord.from_exception(source.path, stage, error)
        )

    def process(self, source: SourceImage) -> Iterator[tuple[SourceImage, np.ndarray]]:
        try:
            if source.size_bytes > self._max_bytes:
                raise FileTooLargeError(
                    f"file is {source.size_bytes} bytes, over the limit of {self._max_bytes}"
                )
            data = read_file(source.path, self._max_bytes)
        except Exception as error:  # Any filesystem failure is this file's error.
            yield self._fail(source, "read", error)
            return
        self._read.inc()
        try:
            image = decode_image(data, self._max_pixels)
        except Exception as error:  # decode_image raises only ImageDecodeError; be sure.
            yield self._fail(source, "decode", error)
            return
        self._decoded.inc()
        yield source, image


class ResizeImageFn(beam.DoFn):
    """``(SourceImage, image)`` -> ``(ImageKey, uint8 [S, S, 3])``, the keyed model input."""

    def __init__(self, image_size: int, keep_original: bool = False):
        self._image_size = image_size
        self._keep_original = keep_original

    def process(
        self, element: tuple[SourceImage, np.ndarray]
    ) -> Iterator[tuple[ImageKey, np.ndarray]]:
        source, image = element
        try:
            pixels = resize_image(image, self._image_size)
        except Exception as error:  # e.g. MemoryError on a huge image.
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, ErrorRecord.from_exception(source.path, "resize", error)
            )
            return
        height, width = image.shape[:2]
        original = image if self._keep_original else None
        yield ImageKey(source, height, width, original), pixels


class DecodeImages(beam.PTransform):
    """Reads and decodes images, then resizes them to the model's input size.

    Args:
      image_size: the model's input side S.
      max_pixels: images declaring more pixels are refused before decoding.
      max_bytes: files larger than this are refused before reading.
      keep_original: carry the decoded image along (for overlays).

    Returns a pair ``(keyed model inputs, errors)``.
    """

    def __init__(
        self,
        image_size: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        keep_original: bool = False,
    ):
        super().__init__()
        self._image_size = image_size
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._keep_original = keep_original

    def expand(self, sources):
        decoded = sources | "DecodeImage" >> beam.ParDo(
            DecodeImageFn(self._max_pixels, self._max_bytes)
        ).with_outputs(ERRORS_TAG, main="images")
        resized = decoded.images | "ResizeImage" >> beam.ParDo(
            ResizeImageFn(self._image_size, self._keep_original)
        ).with_outputs(ERRORS_TAG, main="inputs")
        errors = (
            decoded[ERRORS_TAG],
            resized[ERRORS_TAG],
        ) | "FlattenDecodeErrors" >> beam.Flatten()
        return resized.inputs, errors
