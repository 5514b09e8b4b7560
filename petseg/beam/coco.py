"""COCO records of the job's masks (``--coco``): ``OUT/coco/`` shards, then ``OUT/coco.json``.

Each image's record is made from its mask file, whether this run wrote it
or reused it, so a resumed run's records are the ones an uninterrupted run
makes. The records are a table like the statistics (sorted shards, written
with bounded memory: :class:`~petseg.beam.shards.WriteTable`). Once the
pipeline is done, the driver assembles ``OUT/coco.json`` from the shards,
streaming, and renames it into place whole (:func:`assemble_coco`). The
format is described in :mod:`petseg.labels.coco`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from petseg.beam.faults import EnvironmentFault, environment_fault
from petseg.beam.io import join_path
from petseg.beam.layout import COCO_DIR, COCO_FILE
from petseg.beam.shards import WriteTable, shard_name
from petseg.beam.threaded import ThreadedDoFn
from petseg.beam.write import read_file, read_written_mask, write_atomically
from petseg.labels.coco import categories, class_annotations, document_chunks, image_row

SHARD_PREFIX = "coco"


class AnnotateMaskFn(ThreadedDoFn):
    """A statistics record -> the ``(path, JSON line)`` row of its image's COCO record.

    Reads the image's committed mask and its provenance (the path below the
    input root, each class's confidence) on a thread pool.

    Args:
      output: the job's output folder OUT.
      foreground: the class indices annotated.
      threads, max_in_flight: as :class:`~petseg.beam.threaded.ThreadedDoFn`.
    """

    def __init__(
        self,
        output: str,
        foreground: Sequence[int],
        threads: int | None = None,
        max_in_flight: int | None = None,
    ):
        super().__init__(threads, max_in_flight)
        self._output = output
        self._foreground = tuple(foreground)

    def work(self, record: dict[str, Any]) -> list[tuple[str, str]]:
        path = join_path(self._output, record["mask_path"])
        try:
            data = read_file(path)
        except Exception as error:
            raise environment_fault(f"cannot read {path}", error) from error
        mask, provenance = read_written_mask(data)
        # A mask the run committed always has its provenance (petseg.beam.resume).
        scores = provenance.class_confidence or (provenance.mean_confidence,) * (
            int(mask.max(initial=0)) + 1
        )
        image = {
            "file_name": provenance.source,
            "width": record["width"],
            "height": record["height"],
            "path": record["path"],
            "mask_path": record["mask_path"],
        }
        return [image_row(image, class_annotations(mask, self._foreground, scores))]


class WriteCoco(beam.PTransform):
    """Writes the COCO records of the statistics records' images as ``OUT/coco/`` shards.

    Args:
      output: the job's output folder OUT.
      foreground: the class indices annotated.
      num_shards: how many shards.
      threads, max_in_flight: as :class:`~petseg.beam.threaded.ThreadedDoFn`.
    """

    def __init__(
        self,
        output: str,
        foreground: Sequence[int],
        num_shards: int,
        threads: int | None = None,
        max_in_flight: int | None = None,
    ):
        super().__init__()
        self._output = output
        self._num_shards = num_shards
        self._fn = AnnotateMaskFn(output, foreground, threads, max_in_flight)

    def expand(self, records):
        rows = tuple(
            part | f"AnnotateMask{index or ''}" >> beam.ParDo(self._fn)
            for index, part in enumerate(records)
        )
        directory = join_path(self._output, COCO_DIR)
        return rows | "WriteCocoShards" >> WriteTable(directory, SHARD_PREFIX, self._num_shards)


def coco_shards(output: str, num_shards: int) -> list[str]:
    """The paths of OUT's COCO shards, in order."""
    directory = join_path(output, COCO_DIR)
    return [shard_name(directory, SHARD_PREFIX, index, num_shards) for index in range(num_shards)]


def _shard_lines(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        if not FileSystems.exists(path):
            continue  # An object store holds no empty shard.
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            for line in file:
                if line.strip():
                    yield line.decode("utf-8")


def assemble_coco(
    output: str,
    num_shards: int,
    class_names: Sequence[str],
    foreground: Sequence[int],
    model_id: str,
) -> dict[str, int]:
    """Writes ``OUT/coco.json`` from the shards; returns how many images and annotations it holds.

    Raises:
      EnvironmentFault: a shard cannot be read, or the file cannot be written.
    """
    paths = coco_shards(output, num_shards)
    info = {"description": "petseg segmentation masks", "version": model_id}
    tally: dict[str, int] = {}
    try:
        write_atomically(
            join_path(output, COCO_FILE),
            lambda: document_chunks(
                lambda: _shard_lines(paths), info, categories(class_names, foreground), tally
            ),
        )
    except EnvironmentFault:
        raise
    except Exception as error:
        raise environment_fault(f"cannot assemble {join_path(output, COCO_FILE)}", error) from error
    return tally
