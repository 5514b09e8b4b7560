"""Writing masks, overlays and JSON Lines through Beam's filesystems, atomically.

Every file is written under a temporary name beside its destination and
renamed into place, so a crashed or retried worker never leaves a
half-written file under a final name. Encoders are deterministic: a rerun
writes byte-identical masks, and tables are sorted by path within shards
chosen by a stable hash (:mod:`petseg.beam.shards`), so reruns on any
runner match byte for byte.

A mask is also its image's commit record: its PNG carries a ``petseg`` text
chunk (:class:`MaskProvenance`) with what a resumed run needs to trust it
and to rebuild its statistics without the model. A write that fails is
retried, then raised as an :class:`~petseg.beam.faults.EnvironmentFault`;
only a mask name too long for OUT's filesystem is the image's own error.
"""

from __future__ import annotations

import io
import itertools
import json
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image, PngImagePlugin

from petseg.beam.faults import EnvironmentFault, with_write_retries
from petseg.beam.io import error_output, join_path, overlay_relative_path
from petseg.beam.layout import TEMP_MARKER
from petseg.beam.records import COUNTER_NAMESPACE, Segmentation
from petseg.beam.threaded import ThreadedDoFn, ThreadedStep
from petseg.drawing import CLASS_COLOURS, encode_overlay, palette
from petseg.storage import is_present, is_remote

# A mask is mostly long runs of one class, which zlib's run-length strategy
# packs faster and smaller than its default one; level 1 trades a little size
# for speed (figures: docs/benchmarks.md, "What changed, and what each change
# bought").
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE
# The PNG text chunk keyword of a mask's provenance.
PROVENANCE_KEY = "petseg"
# Temporary names: a random token per process, then a counter (cheaper than
# a fresh uuid4 per file, and as unique): 32 hex digits in all.
_PROCESS_TOKEN = uuid.uuid4().hex[:16]
_temporaries = itertools.count()
CONFIDENCE_DECIMALS = 6


@dataclass(frozen=True)
class MaskProvenance:
    """What a mask file says of how it was made (its PNG's ``petseg`` text chunk).

    Attributes:
      source: the image's path below its input root.
      source_bytes: the image's size when it was segmented; an input replaced
        by a file of another size is segmented again on resume.
      model_id: the model that drew the mask.
      batch_size: the fixed inference batch shape (it can change the last bits
        of probabilities, so masks made at another shape are not reused).
      mean_confidence: the image's mean confidence, rounded as statistics
        report it, so a resumed run rebuilds byte-identical statistics.
      class_confidence: each class's mean confidence over its pixels (COCO's
        scores), in runs that write COCO; empty otherwise, and then not written.
    """

    source: str
    source_bytes: int
    model_id: str
    batch_size: int
    mean_confidence: float
    class_confidence: tuple[float, ...] = ()

    def to_text(self) -> str:
        fields = asdict(self)
        if not self.class_confidence:
            del fields["class_confidence"]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> MaskProvenance:
        """Parses a chunk's text.

        Raises:
          ValueError: not a provenance record.
        """
        try:
            fields = json.loads(text)
            return cls(
                source=str(fields["source"]),
                source_bytes=int(fields["source_bytes"]),
                model_id=str(fields["model_id"]),
                batch_size=int(fields["batch_size"]),
                mean_confidence=float(fields["mean_confidence"]),
                class_confidence=tuple(float(v) for v in fields.get("class_confidence", ())),
            )
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a petseg provenance chunk: {error}") from None


def encode_mask(
    mask: np.ndarray,
    colours: Sequence[tuple[int, int, int]] = CLASS_COLOURS,
    provenance: MaskProvenance | None = None,
) -> bytes:
    """A class map as a mode ``P`` PNG: pixel value = class index, palette = class colours.

    Args:
      mask: ``uint8 [H, W]`` class indices.
      colours: the palette, one colour per class.
      provenance: written as the PNG's ``petseg`` text chunk when given.
    """
    height, width = mask.shape
    image = Image.frombytes(
        "P", (width, height), np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    )
    image.putpalette(palette(tuple(colours)))
    info = None
    if provenance is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(PROVENANCE_KEY, provenance.to_text())
    buffer = io.BytesIO()
    image.save(
        buffer,
        format="PNG",
        optimize=False,
        compress_level=PNG_COMPRESS_LEVEL,
        compress_type=PNG_STRATEGY,
        pnginfo=info,
    )
    return buffer.getvalue()


def read_written_mask(data: bytes) -> tuple[np.ndarray, MaskProvenance | None]:
    """A mask file's class map and provenance (``None`` without one).

    Raises:
      ValueError: (or Pillow's own error) not a palette PNG, or a bad chunk.
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG" or image.mode != "P":
            raise ValueError(f"not a palette PNG ({image.format} {image.mode})")
        text = image.text.get(PROVENANCE_KEY)
        mask = np.asarray(image)
    return mask, (MaskProvenance.from_text(text) if text is not None else None)


def write_atomically(path: str, data: bytes | Callable[[], Iterable[bytes]]) -> None:
    """Writes ``data`` to a temporary sibling of ``path``, then renames it to ``path``.

    ``data`` is the bytes, or a function that gives them in chunks (called
    again for each attempt), for files too large to hold. A failed attempt is
    retried a few times (see :mod:`petseg.beam.faults`).

    Raises:
      EnvironmentFault: the write or rename kept failing; no temporary file is left.
      OSError: the name is too long for the filesystem (the input's fault).
    """
    with_write_retries(lambda: _write_once(path, data), f"cannot write {path}")


def write_fresh(path: str, data: bytes | Callable[[], Iterable[bytes]]) -> None:
    """Writes ``data`` (as :func:`write_atomically` takes it) straight to ``path``, a
    name no reader looks at before the write is done (a hidden temporary)."""
    with_write_retries(lambda: _create(path, data), f"cannot write {path}")


def _create(path: str, data: bytes | Callable[[], Iterable[bytes]]) -> None:
    chunks = [data] if isinstance(data, bytes) else data()
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        for chunk in chunks:
            file.write(chunk)


def temporary_suffix() -> str:
    """``.tmp-`` and 32 hex digits, new at each call: what marks a hidden name temporary."""
    return f"{TEMP_MARKER}{_PROCESS_TOKEN}{next(_temporaries):016x}"


def _write_once(path: str, data: bytes | Callable[[], Iterable[bytes]]) -> None:
    folder, _, name = path.rpartition("/")
    temporary = f"{folder}/.{name}{temporary_suffix()}"
    try:
        _create(temporary, data)
        FileSystems.rename([temporary], [path])
    except BaseException:
        try:
            FileSystems.delete([temporary])
        except Exception:  # The original failure is the one worth reporting.
            pass
        raise


def delete_if_present(path: str, folder: bool = False) -> bool:
    """Deletes a file, or with ``folder`` a folder and all below it; returns whether it was there.

    Failures are retried as writes are (:func:`~petseg.beam.faults.with_write_retries`).

    Raises:
      EnvironmentFault: it is there and cannot be deleted.
    """
    # Beam deletes an object store's whole prefix given a trailing slash.
    target = path.rstrip("/") + "/" if folder and is_remote(path) else path

    def delete() -> bool:
        there = is_present(path, folder)
        if there:
            FileSystems.delete([target])
        return there

    return with_write_retries(delete, f"cannot delete {path}")


def write_json(path: str, document: dict[str, Any]) -> None:
    """Writes ``document`` as indented, key-sorted JSON, atomically."""
    write_atomically(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_summary(summary: dict[str, Any], path: str) -> str:
    """``write_json`` with the document first, as ``beam.Map`` passes it; returns ``path``."""
    write_json(path, summary)
    return path


def read_file(path: str) -> bytes:
    """A file's bytes through Beam's filesystems (local or in a bucket)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        return file.read()


def read_json(path: str) -> dict[str, Any]:
    """Reads a JSON document through Beam's filesystems."""
    return json.loads(read_file(path).decode("utf-8"))


class WriteMaskFn(ThreadedDoFn):
    """Writes a :class:`Segmentation`'s mask (and overlay) on a thread pool; passes it on.

    Args:
      output: the job's output folder OUT.
      model_id: the model's id, recorded in each mask's provenance.
      batch_size: the fixed inference batch shape, likewise.
      overlays: also write colour overlays under ``OUT/overlays/``.
      threads: threads of the worker process's pool, shared with the other
        threaded steps (``None``: every core).
      max_in_flight: masks held at once, at most.

    Raises (from the bundle): :class:`~petseg.beam.faults.EnvironmentFault`
    when OUT cannot be written.
    """

    def __init__(
        self,
        output: str,
        model_id: str = "",
        batch_size: int = 0,
        overlays: bool = False,
        threads: int | None = None,
        max_in_flight: int | None = None,
    ):
        super().__init__(threads, max_in_flight)
        self._output = output
        self._model_id = model_id
        self._batch_size = batch_size
        self._overlays = overlays
        self._written = Metrics.counter(COUNTER_NAMESPACE, "masks_written")

    def work(self, segmentation: Segmentation) -> list:
        key = segmentation.key
        provenance = MaskProvenance(
            source=key.source.relative,
            source_bytes=key.source.size_bytes,
            model_id=self._model_id,
            batch_size=self._batch_size,
            mean_confidence=round(segmentation.mean_confidence, CONFIDENCE_DECIMALS),
            class_confidence=segmentation.class_confidence,
        )
        try:
            # The overlay goes first: a mask on disk then always means "done".
            if self._overlays and key.original is not None:
                overlay = encode_overlay(key.original, segmentation.mask)
                target = join_path(self._output, overlay_relative_path(key.source.mask_path))
                write_atomically(target, overlay)
            write_atomically(
                join_path(self._output, key.source.mask_path),
                encode_mask(segmentation.mask, provenance=provenance),
            )
        except EnvironmentFault:
            raise  # OUT's fault, not the image's: the runner retries the bundle.
        except Exception as error:  # Only a name OUT's filesystem cannot hold.
            return [error_output(key.source.path, "write", error)]
        return [segmentation]

    def emitted(self, output) -> None:
        if not isinstance(output, beam.pvalue.TaggedOutput):
            self._written.inc()


class WriteMasks(ThreadedStep):
    """Writes masks under ``OUT/masks/`` (and overlays under ``OUT/overlays/``).

    Takes the arguments of :class:`WriteMaskFn`. Returns ``(written, errors)``.
    """

    fn_class = WriteMaskFn
    fn_label = "WriteMask"
    main_tag = "written"
