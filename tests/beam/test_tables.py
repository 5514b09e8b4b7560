"""Statistics and errors as Parquet: the same rows as JSON Lines, flat columns per class."""

from __future__ import annotations

import json
import pathlib

import pyarrow.parquet as pq
import pytest

from beam_jobs import segment as segment_job
from petseg.beam.tables import flatten, read_table, stats_format, unflatten
from petseg.classes import CLASS_NAMES
from petseg.report import load_run
from tests.beam_helpers import GOOD_IMAGES, job_argv, snapshot, write_image_tree

RUN_FIELDS = ("wall_time_s", "images_per_second", "masks_reused", "masks_pruned")


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory):
    """``(tree, {format: OUT})``: one run of each format over the same tree."""
    base = tmp_path_factory.mktemp("tables")
    tree = write_image_tree(base / "in")
    outputs = {}
    for name in ("jsonl", "parquet"):
        outputs[name] = base / name
        segment_job.run(job_argv(tree, model_dir, outputs[name], "--stats-format", name))
    return tree, outputs


def _jsonl(folder: pathlib.Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open()]


def test_parquet_holds_one_row_per_mask_with_a_column_pair_per_class(runs):
    _, outputs = runs
    (shard,) = sorted((outputs["parquet"] / "stats").iterdir())
    assert shard.name == "stats-00000-of-00001.parquet"
    table = pq.read_table(shard)
    summary = json.loads((outputs["parquet"] / "summary.json").read_text())
    assert table.num_rows == summary["masks_written"] == len(GOOD_IMAGES)
    expected = [name for name, _ in stats_format("parquet", CLASS_NAMES).columns]
    assert table.column_names == expected
    assert "pixels_border" in expected and "fraction_pet" in expected
    assert str(table.schema.field("pixels_pet").type) == "int64"


def test_parquet_rows_are_the_json_lines_records(runs):
    _, outputs = runs
    jsonl = _jsonl(outputs["jsonl"] / "stats")
    rows = pq.read_table(outputs["parquet"] / "stats").to_pylist()
    assert rows == [flatten(record) for record in jsonl]
    assert [unflatten(row) for row in rows] == jsonl
    errors = pq.read_table(outputs["parquet"] / "errors").to_pylist()
    assert errors == _jsonl(outputs["jsonl"] / "errors") and errors


def test_the_summaries_agree_across_formats(runs):
    _, outputs = runs
    summaries = [
        {
            key: value
            for key, value in json.loads((outputs[name] / "summary.json").read_text()).items()
            if key not in RUN_FIELDS
        }
        for name in ("jsonl", "parquet")
    ]
    assert summaries[0] == summaries[1] and summaries[0]["reconciliation"]["ok"]


def test_a_rerun_resumes_into_byte_identical_parquet(runs, model_dir):
    tree, outputs = runs
    before = snapshot(outputs["parquet"])
    summary = segment_job.run(
        job_argv(tree, model_dir, outputs["parquet"], "--stats-format", "parquet")
    )
    assert summary["masks_reused"] == len(GOOD_IMAGES)
    assert snapshot(outputs["parquet"]) == before


def test_the_report_reads_either_format(runs):
    _, outputs = runs
    _, stats_jsonl, errors_jsonl = load_run(str(outputs["jsonl"]))
    _, stats_parquet, errors_parquet = load_run(str(outputs["parquet"]))
    assert stats_parquet == stats_jsonl and errors_parquet == errors_jsonl
    assert read_table([]) == []


def test_another_format_in_the_same_out_is_refused(runs, model_dir, capsys):
    tree, outputs = runs
    argv = job_argv(tree, model_dir, outputs["jsonl"], "--stats-format", "parquet")
    assert segment_job.main(argv) == 2
    assert "--stats-format: parquet here, jsonl in OUT" in capsys.readouterr().err
