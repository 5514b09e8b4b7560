"""Per-image statistics (contract 5) and the dataset summary (contract 7).

The summary is a ``CombineFn`` whose accumulator holds integers only:
fractions and confidences are accumulated as fixed-point millionths of
millionths. Integer sums do not depend on the order Beam combines in, so
every runner, and every rerun, reports the same summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from petseg.beam.records import (
    COUNTER_NAMESPACE,
    STAGES,
    ErrorRecord,
    Segmentation,
    SourceImage,
)
from petseg.beam.threaded import ThreadedDoFn
from petseg.classes import PET

HISTOGRAM_BINS = 10
# Fixed point for order-independent sums: 1e12 units per 1.0, exact in Python ints.
_UNIT = 10**12
DECIMALS = 6


def image_stats(
    segmentation: Segmentation, class_names: Sequence[str], model_id: str
) -> dict[str, Any]:
    """One image's statistics record.

    Returns:
      ``{"path", "mask_path", "width", "height", "pixels": {class: count},
      "fractions": {class: fraction}, "mean_confidence", "model_id"}``;
      ``mask_path`` is relative to OUT, so output folders compare and move freely.
    """
    return mask_stats(
        segmentation.key.source,
        segmentation.mask,
        segmentation.mean_confidence,
        class_names,
        model_id,
    )


def mask_stats(
    source: SourceImage,
    mask: np.ndarray,
    mean_confidence: float,
    class_names: Sequence[str],
    model_id: str,
) -> dict[str, Any]:
    """The statistics record of ``source`` from its mask (see :func:`image_stats`).

    A resumed run rebuilds the records of reused masks with this, from the
    mask files, so they match an uninterrupted run's byte for byte.
    """
    height, width = mask.shape
    total = width * height
    # One comparison per class over the uint8 mask, where np.bincount would
    # first widen every pixel to a 64-bit index (figures: docs/benchmarks.md).
    counts = [int(np.count_nonzero(mask == index)) for index in range(len(class_names))]
    return {
        "path": source.path,
        "mask_path": source.mask_path,
        "width": width,
        "height": height,
        "pixels": {name: int(counts[index]) for index, name in enumerate(class_names)},
        "fractions": {
            name: round(int(counts[index]) / total, DECIMALS)
            for index, name in enumerate(class_names)
        },
        "mean_confidence": round(mean_confidence, DECIMALS),
        "model_id": model_id,
    }


class ComputeImageStatsFn(ThreadedDoFn):
    """:class:`Segmentation` -> its statistics record; counts pixels per class in metrics.

    Args:
      class_names: the model's classes, index order.
      model_id: the model's id.
      threads, max_in_flight: as :class:`~petseg.beam.threaded.ThreadedDoFn`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        model_id: str,
        threads: int | None = None,
        max_in_flight: int | None = None,
    ):
        super().__init__(threads, max_in_flight)
        self._class_names = tuple(class_names)
        self._model_id = model_id

    def setup(self):
        super().setup()
        self._pixels = {
            name: Metrics.counter(COUNTER_NAMESPACE, f"pixels_{name}") for name in self._class_names
        }

    def work(self, segmentation: Segmentation) -> list[dict[str, Any]]:
        return [image_stats(segmentation, self._class_names, self._model_id)]

    def emitted(self, record: dict[str, Any]) -> None:
        for name, count in record["pixels"].items():
            self._pixels[name].inc(count)


@dataclass
class SummaryAccumulator:
    """Integer sums over images; see the module docstring for the fixed point."""

    images: int = 0
    pixels: list[int] = field(default_factory=list)
    fraction_units: list[int] = field(default_factory=list)
    pet_histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    confidence_units: int = 0


def _units(value: float) -> int:
    return round(value * _UNIT)


class SummaryCombineFn(beam.CombineFn):
    """Combines per-image statistics records into the dataset's summary.

    Args:
      class_names: the model's classes, index order.
      model_id: the model's id, reported in the summary.
    """

    def __init__(self, class_names: Sequence[str], model_id: str):
        self._class_names = tuple(class_names)
        self._model_id = model_id

    def create_accumulator(self) -> SummaryAccumulator:
        size = len(self._class_names)
        return SummaryAccumulator(pixels=[0] * size, fraction_units=[0] * size)

    def add_input(
        self, accumulator: SummaryAccumulator, record: dict[str, Any]
    ) -> SummaryAccumulator:
        pixels = [int(record["pixels"][name]) for name in self._class_names]
        total = max(sum(pixels), 1)
        accumulator.images += 1
        for index, count in enumerate(pixels):
            accumulator.pixels[index] += count
            # From the exact counts, not the rounded fractions in the record.
            accumulator.fraction_units[index] += count * _UNIT // total
        pet_bin = min(pixels[PET] * HISTOGRAM_BINS // total, HISTOGRAM_BINS - 1)
        accumulator.pet_histogram[pet_bin] += 1
        accumulator.confidence_units += _units(float(record["mean_confidence"]))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[SummaryAccumulator]) -> SummaryAccumulator:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.images += accumulator.images
            merged.confidence_units += accumulator.confidence_units
            for index in range(len(self._class_names)):
                merged.pixels[index] += accumulator.pixels[index]
                merged.fraction_units[index] += accumulator.fraction_units[index]
            for index in range(HISTOGRAM_BINS):
                merged.pet_histogram[index] += accumulator.pet_histogram[index]
        return merged

    def extract_output(self, accumulator: SummaryAccumulator) -> dict[str, Any]:
        images = accumulator.images
        total_pixels = sum(accumulator.pixels)

        def mean(units: int) -> float:
            return round(units / _UNIT / images, DECIMALS) if images else 0.0

        return {
            "model_id": self._model_id,
            "class_names": list(self._class_names),
            "images": images,
            "pixels": dict(zip(self._class_names, accumulator.pixels, strict=True)),
            "pixel_fraction": {
                name: round(count / total_pixels, DECIMALS) if total_pixels else 0.0
                for name, count in zip(self._class_names, accumulator.pixels, strict=True)
            },
            "mean_fraction": {
                name: mean(units)
                for name, units in zip(self._class_names, accumulator.fraction_units, strict=True)
            },
            "pet_fraction_histogram": {
                "bin_edges": [
                    round(index / HISTOGRAM_BINS, 2) for index in range(HISTOGRAM_BINS + 1)
                ],
                "counts": list(accumulator.pet_histogram),
            },
            "mean_confidence": mean(accumulator.confidence_units),
        }


def reconcile(
    image_summary: Mapping[str, Any],
    matched: int,
    failures_by_stage: Mapping[str, int],
    masks_reused: int = 0,
    masks_pruned: int = 0,
) -> dict[str, Any]:
    """The full summary: image statistics plus the accounting of every matched file.

    Args:
      image_summary: :class:`SummaryCombineFn`'s output.
      matched: distinct files matched.
      failures_by_stage: error count per stage.
      masks_reused: masks a resumed run found committed and did not infer again
        (counted in ``masks_written``: they are this run's masks too).
      masks_pruned: masks of earlier runs whose inputs are gone or now refused,
        removed from OUT.

    Returns:
      The summary document; ``reconciliation.ok`` says whether
      ``matched == masks_written + failed``.
    """
    failed = sum(failures_by_stage.values())
    written = image_summary["images"]
    by_stage = {stage: int(failures_by_stage.get(stage, 0)) for stage in STAGES}
    by_stage.update(
        {stage: int(n) for stage, n in failures_by_stage.items() if stage not in by_stage}
    )
    return {
        **image_summary,
        "matched": matched,
        "masks_written": written,
        "masks_reused": masks_reused,
        "masks_pruned": masks_pruned,
        "failed": failed,
        "failed_by_stage": by_stage,
        "reconciliation": {
            "ok": matched == written + failed,
            "rule": "matched == masks_written + failed",
            "difference": matched - written - failed,
        },
    }


def stats_line(record: dict[str, Any]) -> tuple[str, str]:
    """``(sort key, JSON line)`` of a statistics record, for :class:`WriteTable`."""
    return record["path"], json.dumps(record, sort_keys=True)


class CountErrorsFn(beam.DoFn):
    """Passes errors through, counting them in ``failed`` and ``failed_<stage>``.

    Counted once, after every stage's errors are flattened, so no failure is
    missed or counted twice whichever step reported it.
    """

    def setup(self):
        self._failed = Metrics.counter(COUNTER_NAMESPACE, "failed")
        self._by_stage = {
            stage: Metrics.counter(COUNTER_NAMESPACE, f"failed_{stage}") for stage in STAGES
        }

    def process(self, error: ErrorRecord) -> Iterator[ErrorRecord]:
        self._failed.inc()
        counter = self._by_stage.get(error.stage)
        if counter is not None:
            counter.inc()
        yield error


@dataclass
class RunAccumulator:
    """A run's counts beside its image sums: integers only, like :class:`SummaryAccumulator`."""

    images: SummaryAccumulator
    matched: int = 0
    reused: int = 0
    pruned: int = 0
    failures: dict[str, int] = field(default_factory=dict)


# The kinds of element :class:`RunSummaryCombineFn` counts, tagged by :class:`SummarizeRun`.
_COUNTED = ("matched", "pruned")


class RunSummaryCombineFn(beam.CombineFn):
    """``(kind, value)`` elements of a whole run -> its summary (see :func:`reconcile`).

    A ``("record", statistics record)`` adds an image to :class:`SummaryCombineFn`'s
    sums, a ``("reused", statistics record)`` adds a reused mask's image and
    counts it as reused, a ``("failed", stage)`` counts a failure, and
    ``("matched" | "pruned", None)`` counts one of those. One combine instead of one per count
    keeps the pipeline short: every step costs the runner time to build and start.

    Args:
      class_names: the model's classes.
      model_id: the model's id.
    """

    def __init__(self, class_names: Sequence[str], model_id: str):
        self._images = SummaryCombineFn(class_names, model_id)

    def create_accumulator(self) -> RunAccumulator:
        return RunAccumulator(self._images.create_accumulator())

    def add_input(self, accumulator: RunAccumulator, element: tuple[str, Any]) -> RunAccumulator:
        kind, value = element
        if kind in ("record", "reused"):
            self._images.add_input(accumulator.images, value)
            if kind == "reused":
                accumulator.reused += 1
        elif kind == "failed":
            accumulator.failures[value] = accumulator.failures.get(value, 0) + 1
        elif kind in _COUNTED:
            setattr(accumulator, kind, getattr(accumulator, kind) + 1)
        else:
            raise ValueError(f"unknown kind of element {kind!r}")
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[RunAccumulator]) -> RunAccumulator:
        accumulators = list(accumulators)
        merged = self.create_accumulator()
        merged.images = self._images.merge_accumulators(a.images for a in accumulators)
        for accumulator in accumulators:
            for kind in (*_COUNTED, "reused"):
                setattr(merged, kind, getattr(merged, kind) + getattr(accumulator, kind))
            for stage, count in accumulator.failures.items():
                merged.failures[stage] = merged.failures.get(stage, 0) + count
        return merged

    def extract_output(self, accumulator: RunAccumulator) -> dict[str, Any]:
        return reconcile(
            self._images.extract_output(accumulator.images),
            matched=accumulator.matched,
            failures_by_stage=accumulator.failures,
            masks_reused=accumulator.reused,
            masks_pruned=accumulator.pruned,
        )


def _counted(element: Any) -> None:
    return None


def _stage(error: ErrorRecord) -> str:
    return error.stage


class _SumRunFn(beam.DoFn):
    """One kind of a run's elements -> one :class:`RunAccumulator` per bundle.

    The summing a runner's lifted combine would do where the elements are
    made; done by hand, because the DirectRunner does not lift a combine fed
    by a Flatten of several steps, and held every statistics record until
    the end of the run to combine them.

    Args:
      combine_fn: the run's :class:`RunSummaryCombineFn`.
      kind: what each element is (see :class:`RunSummaryCombineFn`).
      value: the element's value for that kind (default: the element).
    """

    def __init__(self, combine_fn: RunSummaryCombineFn, kind: str, value=None):
        self._combine_fn = combine_fn
        self._kind = kind
        self._value = value

    def start_bundle(self):
        self._accumulator = self._combine_fn.create_accumulator()

    def process(self, element: Any) -> Iterator[RunAccumulator]:
        value = element if self._value is None else self._value(element)
        self._accumulator = self._combine_fn.add_input(self._accumulator, (self._kind, value))
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield GlobalWindows.windowed_value(self._accumulator)


class _MergeRunFn(beam.CombineFn):
    """Merges :class:`RunAccumulator` elements into the run's summary."""

    def __init__(self, combine_fn: RunSummaryCombineFn):
        self._combine_fn = combine_fn

    def create_accumulator(self) -> RunAccumulator:
        return self._combine_fn.create_accumulator()

    def add_input(self, accumulator: RunAccumulator, element: RunAccumulator) -> RunAccumulator:
        return self._combine_fn.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[RunAccumulator]) -> RunAccumulator:
        return self._combine_fn.merge_accumulators(accumulators)

    def extract_output(self, accumulator: RunAccumulator) -> dict[str, Any]:
        return self._combine_fn.extract_output(accumulator)


class SummarizeRun(beam.PTransform):
    """``(matched sources, new statistics records, errors)`` -> the one-element summary.

    Two more collections may follow, for a resumed run: the statistics records
    of reused masks and the pruned masks. Each is summed where it is made, a
    :class:`RunAccumulator` per bundle, and the sums meet in one merge of
    :class:`RunSummaryCombineFn`'s accumulators.

    Args:
      class_names: the model's classes.
      model_id: the model's id.
    """

    def __init__(self, class_names: Sequence[str], model_id: str):
        super().__init__()
        self._combine_fn = RunSummaryCombineFn(class_names, model_id)

    def expand(self, inputs):
        matched, records, errors, *resumed = inputs
        kinds = [("Matched", matched, "matched", _counted), ("Records", records, "record", None)]
        kinds.append(("Failures", errors, "failed", _stage))
        if resumed:
            reused, pruned = resumed
            kinds += [("Reused", reused, "reused", None), ("Pruned", pruned, "pruned", _counted)]
        sums = [
            collection | f"Sum{name}" >> beam.ParDo(_SumRunFn(self._combine_fn, kind, value))
            for name, collection, kind, value in kinds
        ]
        return (
            sums
            | "FlattenRun" >> beam.Flatten()
            | "CombineRun" >> beam.CombineGlobally(_MergeRunFn(self._combine_fn))
        )
