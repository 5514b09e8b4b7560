"""Resuming into an OUT that a previous run of the same command left behind.

A mask under its final name is a committed image: it was renamed into place
whole (:mod:`petseg.beam.write`), and its PNG's provenance chunk says which
input it was made from, at what size, by which model and at which batch
shape, and carries the image's mean confidence. A rerun lists OUT once, and
meets that listing with the matched inputs in the grouping by mask path
(:class:`~petseg.beam.io.AssignMaskPaths`). Then:

- a committed mask whose provenance matches its input is reused: its
  statistics are rebuilt from the file, byte-identical to the ones an
  uninterrupted run writes, and the image is not decoded or inferred again;
- a mask whose provenance does not match (the input was replaced, or it was
  made another way) is deleted and its image segmented again;
- a mask, overlay or temporary file that no input claims any more (its input
  was deleted, or is now refused) is pruned, so OUT/masks holds exactly the
  masks of this run's images, and the summary says how many went.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from petseg.beam.faults import environment_fault
from petseg.beam.io import OutputFile, join_path, list_outputs, overlay_relative_path
from petseg.beam.records import COUNTER_NAMESPACE, SourceImage
from petseg.beam.stats import mask_stats
from petseg.beam.threaded import ThreadedDoFn
from petseg.beam.write import MaskProvenance, delete_if_present, read_file, read_written_mask

INFER_TAG = "infer"


class ListOutputs(beam.PTransform):
    """OUT's masks, overlays and leftovers, as ``(mask path, OutputFile)`` pairs.

    Args:
      output: the job's output folder OUT.
    """

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, pipeline):
        return (
            pipeline
            | "CreateOutput" >> beam.Create([self._output])
            | "ListOutputFiles" >> beam.FlatMap(_list_or_fault)
        )


def _list_or_fault(output: str) -> Iterator[tuple[str, OutputFile]]:
    try:
        yield from list(list_outputs(output))
    except Exception as error:
        raise environment_fault(f"cannot list {output}", error) from error


class ReuseMaskFn(ThreadedDoFn):
    """``(source, committed mask file)`` -> the image's statistics record, or the source again.

    Reads the mask and its provenance on a thread pool. A mask that matches
    its input gives the record (main output); any other is deleted, with its
    overlay, and its source goes to ``infer``.

    Args:
      output: the job's output folder OUT.
      class_names: the model's classes, index order.
      model_id: the model's id.
      batch_size: the job's fixed inference batch shape.
      threads, max_in_flight: as :class:`~petseg.beam.threaded.ThreadedDoFn`.
    """

    def __init__(
        self,
        output: str,
        class_names: Sequence[str],
        model_id: str,
        batch_size: int,
        threads: int | None = None,
        max_in_flight: int | None = None,
    ):
        super().__init__(threads, max_in_flight)
        self._output = output
        self._class_names = tuple(class_names)
        self._model_id = model_id
        self._batch_size = batch_size
        self._reused = Metrics.counter(COUNTER_NAMESPACE, "masks_reused")

    def work(self, element: tuple[SourceImage, str]) -> list:
        source, mask_file = element
        try:
            data = read_file(mask_file)
        except Exception as error:
            raise environment_fault(f"cannot read committed mask {mask_file}", error) from error
        record = self._record(source, data)
        if record is not None:
            return [record]
        # Made from another file or another way: it must not outlive this run.
        delete_if_present(mask_file)
        delete_if_present(join_path(self._output, overlay_relative_path(source.mask_path)))
        return [beam.pvalue.TaggedOutput(INFER_TAG, source)]

    def _record(self, source: SourceImage, data: bytes) -> dict[str, Any] | None:
        expected = (source.relative, source.size_bytes, self._model_id, self._batch_size)
        try:
            mask, provenance = read_written_mask(data)
        except Exception:  # Not a mask this job wrote: segment the image again.
            return None
        if provenance is None or expected != _identity(provenance):
            return None
        if int(mask.max(initial=0)) >= len(self._class_names) or 0 in mask.shape:
            return None
        return mask_stats(
            source, mask, provenance.mean_confidence, self._class_names, self._model_id
        )

    def emitted(self, output) -> None:
        if not isinstance(output, beam.pvalue.TaggedOutput):
            self._reused.inc()


def _identity(provenance: MaskProvenance) -> tuple[str, int, str, int]:
    return (
        provenance.source,
        provenance.source_bytes,
        provenance.model_id,
        provenance.batch_size,
    )


class ReuseMasks(beam.PTransform):
    """Checks committed masks. Returns ``(statistics records of reused masks, sources to infer)``.

    Takes the arguments of :class:`ReuseMaskFn`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._reuse = ReuseMaskFn(*args, **kwargs)

    def expand(self, committed):
        results = committed | "ReadCommittedMask" >> beam.ParDo(self._reuse).with_outputs(
            INFER_TAG, main="records"
        )
        return results.records, results[INFER_TAG]


class _PruneFn(beam.DoFn):
    def setup(self):
        self._pruned = Metrics.counter(COUNTER_NAMESPACE, "masks_pruned")

    def process(self, output_file: OutputFile) -> Iterator[str]:
        delete_if_present(output_file.path)
        # Counted whether or not a retried bundle already deleted it, so the
        # count does not depend on retries.
        if output_file.kind == "mask":
            self._pruned.inc()
            yield output_file.path


class PruneOutputs(beam.PTransform):
    """Deletes files under OUT that no input claims; returns the paths of the masks pruned."""

    def expand(self, stale):
        return stale | "DeleteStaleFile" >> beam.ParDo(_PruneFn())
