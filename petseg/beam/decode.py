"""Reading and decoding images to the model's input size, with a dead letter for failures.

Every file goes through :func:`petseg.imageio.decode_resized`, the decoder
training uses, so the model sees pixels prepared exactly as it was trained.
Nothing a file holds can fail a bundle: each failure becomes an
:class:`~petseg.beam.records.ErrorRecord` on the ``errors`` output. A read
that fails for a reason of the storage rather than the file (an I/O error,
a remote 5xx) is not the file's fault: it is raised as an
:class:`~petseg.beam.faults.EnvironmentFault`, for the runner to retry.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from petseg.beam.faults import environment_fault, is_input_read_fault
from petseg.beam.io import error_output
from petseg.beam.records import COUNTER_NAMESPACE, ImageKey, SourceImage
from petseg.beam.threaded import ThreadedDoFn, ThreadedStep
from petseg.imageio import DEFAULT_MAX_PIXELS, decode_image, decode_resized

# A file this big is no photo; refusing it before reading keeps a worker's memory safe.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024


class FileTooLargeError(ValueError):
    """A file bigger than the job's byte limit."""


def read_file(path: str, max_bytes: int, expected_bytes: int = 0) -> bytes:
    """Reads a whole file through Beam's filesystems, refusing more than ``max_bytes``.

    Args:
      path: the file.
      max_bytes: the most it may hold.
      expected_bytes: its size as listed. The first read asks for one byte
        more, so a file that did not grow is read in one call, without a
        buffer of ``max_bytes`` allocated up front.

    Raises:
      FileTooLargeError: the file holds more than ``max_bytes`` bytes.
      OSError: (or a filesystem's own error) the file cannot be read.
    """
    first = min(expected_bytes, max_bytes) + 1
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        data = file.read(first)
        if len(data) == first:  # Grown since it was listed: read on, up to the limit.
            data += file.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:
        raise FileTooLargeError(f"file is larger than the limit of {max_bytes} bytes")
    return data


class DecodeImageFn(ThreadedDoFn):
    """``SourceImage`` -> ``(ImageKey, uint8 [S, S, 3])``, the keyed model input.

    Reads and decodes on a thread pool (see :mod:`petseg.beam.threaded`); a
    file that cannot be read or decoded goes to ``errors`` with its stage.

    Args:
      image_size: the model's input side S.
      max_pixels: images declaring more pixels are refused before decoding.
      max_bytes: files larger than this are refused before reading.
      keep_original: carry the decoded image along (for overlays).
      threads: threads of the worker process's pool, shared with the other
        threaded steps (``None``: every core).
      max_in_flight: images decoded ahead of the model, at most.
    """

    def __init__(
        self,
        image_size: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        keep_original: bool = False,
        threads: int | None = None,
        max_in_flight: int | None = None,
    ):
        super().__init__(threads, max_in_flight)
        self._image_size = image_size
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._keep_original = keep_original
        self._read = Metrics.counter(COUNTER_NAMESPACE, "read")
        self._decoded = Metrics.counter(COUNTER_NAMESPACE, "decoded")

    def work(self, source: SourceImage) -> list:
        try:
            if source.size_bytes > self._max_bytes:
                raise FileTooLargeError(
                    f"file is {source.size_bytes} bytes, over the limit of {self._max_bytes}"
                )
            data = read_file(source.path, self._max_bytes, source.size_bytes)
        except FileTooLargeError as error:
            return [error_output(source.path, "read", error)]
        except Exception as error:
            if is_input_read_fault(error):  # Gone, unreadable, a folder, a link loop.
                return [error_output(source.path, "read", error)]
            raise environment_fault(f"cannot read input {source.path}", error) from error
        try:
            pixels, (height, width) = decode_resized(data, self._image_size, self._max_pixels)
            # Overlays need the full-size picture, a second decode; the model's
            # input stays the one it gets without overlays.
            original = decode_image(data, self._max_pixels) if self._keep_original else None
        except Exception as error:  # ImageDecodeError, or e.g. MemoryError on a huge image.
            return [error_output(source.path, "decode", error)]
        return [(ImageKey(source, height, width, original), pixels)]

    def emitted(self, output) -> None:
        stage = output.value.stage if isinstance(output, beam.pvalue.TaggedOutput) else None
        if stage != "read":
            self._read.inc()
        if stage is None:
            self._decoded.inc()


class DecodeImages(ThreadedStep):
    """Reads and decodes images to the model's input size.

    Takes the arguments of :class:`DecodeImageFn`. Returns a pair
    ``(keyed model inputs, errors)``.
    """

    fn_class = DecodeImageFn
    fn_label = "DecodeImage"
    main_tag = "inputs"
