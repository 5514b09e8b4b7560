"""Per-image statistics, the summary CombineFn, reconciliation and progress lines."""

from __future__ import annotations

import io
import itertools
import os
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from petseg.beam.progress import ProgressReporter, count_masks, progress_line
from petseg.beam.records import ErrorRecord, ImageKey, Segmentation, SourceImage
from petseg.beam.stats import (
    ComputeImageStatsFn,
    SummarizeRun,
    SummaryCombineFn,
    image_stats,
    reconcile,
)
from petseg.classes import CLASS_NAMES


def _segmentation(name: str, mask: np.ndarray, confidence: float = 0.75) -> Segmentation:
    source = SourceImage(f"/in/{name}.jpg", f"{name}.jpg", 0, f"masks/{name}.png")
    return Segmentation(ImageKey(source, mask.shape[0], mask.shape[1]), mask, confidence)


def _mask(pet: int, background: int, border: int) -> np.ndarray:
    return np.array([[0] * pet + [1] * background + [2] * border], dtype=np.uint8)


def test_image_stats_counts_pixels_per_class():
    record = image_stats(_segmentation("a", _mask(1, 2, 1), 0.6123456789), CLASS_NAMES, "m1")
    assert record == {
        "path": "/in/a.jpg",
        "mask_path": "masks/a.png",
        "width": 4,
        "height": 1,
        "pixels": {"pet": 1, "background": 2, "border": 1},
        "fractions": {"pet": 0.25, "background": 0.5, "border": 0.25},
        "mean_confidence": 0.612346,
        "model_id": "m1",
    }


def test_compute_image_stats_under_test_pipeline():
    with test_pipeline.TestPipeline() as pipeline:
        records = (
            pipeline
            | beam.Create([_segmentation("a", _mask(3, 1, 0)), _segmentation("b", _mask(0, 0, 2))])
            | beam.ParDo(ComputeImageStatsFn(CLASS_NAMES, "m1"))
        )
        assert_that(
            records
            | beam.Map(lambda record: (record["path"], record["pixels"]["pet"], record["width"])),
            equal_to([("/in/a.jpg", 3, 4), ("/in/b.jpg", 0, 2)]),
        )


def _records():
    masks = [_mask(10, 0, 0), _mask(1, 8, 1), _mask(0, 5, 5), _mask(3, 3, 4), _mask(7, 2, 1)]
    return [
        image_stats(_segmentation(f"i{index}", mask, 0.5 + index / 10), CLASS_NAMES, "m1")
        for index, mask in enumerate(masks)
    ]


def _combine(combine_fn, partitions):
    accumulators = []
    for partition in partitions:
        accumulator = combine_fn.create_accumulator()
        for record in partition:
            accumulator = combine_fn.add_input(accumulator, record)
        accumulators.append(accumulator)
    return combine_fn.extract_output(combine_fn.merge_accumulators(accumulators))


def test_summary_combine_fn_values():
    summary = _combine(SummaryCombineFn(CLASS_NAMES, "m1"), [_records()])
    assert summary["images"] == 5
    assert summary["pixels"] == {"pet": 21, "background": 18, "border": 11}
    assert summary["pixel_fraction"]["pet"] == 0.42
    assert summary["mean_fraction"] == {"pet": 0.42, "background": 0.36, "border": 0.22}
    # Pet fractions 1.0, 0.1, 0.0, 0.3, 0.7 -> bins 9, 1, 0, 3, 7.
    assert summary["pet_fraction_histogram"]["counts"] == [1, 1, 0, 1, 0, 0, 0, 1, 0, 1]
    assert len(summary["pet_fraction_histogram"]["bin_edges"]) == 11
    assert summary["mean_confidence"] == 0.7
    assert summary["model_id"] == "m1"


def test_summary_combine_fn_does_not_depend_on_order_or_partitioning():
    combine_fn = SummaryCombineFn(CLASS_NAMES, "m1")
    records = _records()
    reference = _combine(combine_fn, [records])
    for permutation in itertools.islice(itertools.permutations(records), 0, 120, 7):
        assert _combine(combine_fn, [permutation[:2], permutation[2:], []]) == reference


def test_summary_of_no_images_is_zero():
    summary = _combine(SummaryCombineFn(CLASS_NAMES, "m1"), [[]])
    assert summary["images"] == 0 and summary["mean_confidence"] == 0.0


def test_reconcile_flags_a_missing_file():
    image_summary = _combine(SummaryCombineFn(CLASS_NAMES, "m1"), [_records()])
    good = reconcile(image_summary, matched=7, failures_by_stage={"decode": 2})
    assert good["reconciliation"]["ok"] and good["failed"] == 2 and good["masks_written"] == 5
    assert good["failed_by_stage"]["decode"] == 2 and good["failed_by_stage"]["write"] == 0
    bad = reconcile(image_summary, matched=8, failures_by_stage={"decode": 2})
    assert not bad["reconciliation"]["ok"] and bad["reconciliation"]["difference"] == 1


def test_run_summary_is_the_same_whichever_way_its_elements_are_split_and_merged():
    from petseg.beam.stats import RunSummaryCombineFn

    combine_fn = RunSummaryCombineFn(CLASS_NAMES, "m1")
    records = _records()
    elements = [("record", record) for record in records[2:]]
    elements += [("reused", record) for record in records[:2]]
    elements += [("matched", None)] * 7 + [("pruned", None)]
    elements += [("failed", "decode"), ("failed", "write")]

    whole = _combine(combine_fn, [elements])
    assert _combine(combine_fn, [elements[::2], elements[1::2], []]) == whole
    assert _combine(combine_fn, [list(reversed(elements))]) == whole
    expected = reconcile(
        _combine(SummaryCombineFn(CLASS_NAMES, "m1"), [_records()]),
        matched=7,
        failures_by_stage={"decode": 1, "write": 1},
        masks_reused=2,
        masks_pruned=1,
    )
    assert whole == expected and whole["reconciliation"]["ok"]
    with pytest.raises(ValueError, match="unknown kind"):
        combine_fn.add_input(combine_fn.create_accumulator(), ("mask", None))


def test_summarize_run_under_test_pipeline():
    records = _records()
    sources = [SourceImage(f"/in/{index}.jpg", f"{index}.jpg") for index in range(7)]
    errors = [
        ErrorRecord("/in/5.jpg", "decode", "ImageDecodeError", "empty"),
        ErrorRecord("/in/6.jpg", "match", "MaskCollisionError", "taken"),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        summary = (
            pipeline | "CreateSources" >> beam.Create(sources),
            pipeline | "CreateRecords" >> beam.Create(records),
            pipeline | "CreateErrors" >> beam.Create(errors),
        ) | SummarizeRun(CLASS_NAMES, "m1")
        assert_that(
            summary
            | beam.Map(
                lambda s: (
                    s["matched"],
                    s["masks_written"],
                    s["failed"],
                    s["failed_by_stage"]["decode"],
                    s["reconciliation"]["ok"],
                )
            ),
            equal_to([(7, 5, 2, 1, True)]),
        )


def test_progress_line():
    assert progress_line(30, 120, 10.0) == (
        "petseg-segment: 30/120 masks written (25.0%), 3.0 images/s"
    )


def test_progress_reporter_counts_new_masks_only(tmp_path):
    masks = tmp_path / "masks"
    (masks / "old").mkdir(parents=True)
    old = masks / "old/stale.png"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    stream = io.StringIO()
    with ProgressReporter(str(masks), total=4, interval_s=0.05, stream=stream) as reporter:
        (masks / "new").mkdir()
        (masks / "new/a.png").write_bytes(b"x")
        (masks / "new/.b.png.tmp-123").write_bytes(b"x")
        deadline = time.monotonic() + 10
        while "1/4" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "petseg-segment: 1/4 masks written" in stream.getvalue()
    assert reporter.lines_printed >= 1
    assert count_masks(str(masks), since=0) == 2
