"""The segmentation job end to end on the DirectRunner, with a real tiny model."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from beam_jobs import segment as segment_job
from petseg.beam.pipeline import build_pipeline
from petseg.classes import CLASS_NAMES
from petseg.cli.segment import segment_images
from petseg.drawing import CLASS_COLOURS
from petseg.imageio import decode_image
from petseg.serving.export import load_serving_model
from tests.beam_helpers import (
    BAD_IMAGES,
    COLLISION_LOSERS,
    GOOD_IMAGES,
    MODEL_ID,
    expected_mask,
    job_argv,
    snapshot,
    write_image_tree,
)
from tests.conftest import REPO_ROOT as REPO

BATCH = 4


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("beam-tree") / "in")


def _argv(tree, model_dir, output, *extra):
    return job_argv(tree, model_dir, output, *extra, batch_size=BATCH)


@pytest.fixture(scope="module")
def direct_run(tree, model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("beam-direct") / "out"
    summary = segment_job.run(_argv(tree, model_dir, output))
    return summary, output


def _expected_mask(model, path: pathlib.Path) -> np.ndarray:
    """What the model gives directly: same decode, resize, fixed batch, upsample and argmax."""
    return expected_mask(model, path.read_bytes(), BATCH)


def _read_lines(folder: pathlib.Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open()]


def test_every_good_image_gets_the_models_mask(direct_run, tree, model_dir):
    _, output = direct_run
    model, _ = load_serving_model(str(model_dir))
    for relative, (width, height) in GOOD_IMAGES.items():
        mask_path = output / "masks" / (relative.rsplit(".", 1)[0] + ".png")
        image = Image.open(mask_path)
        assert image.mode == "P", relative
        assert image.size == (width, height), relative
        assert image.getpalette()[:9] == [c for colour in CLASS_COLOURS for c in colour]
        np.testing.assert_array_equal(
            np.asarray(image), _expected_mask(model, tree / relative), err_msg=relative
        )
    written = sorted(
        str(p.relative_to(output / "masks")) for p in (output / "masks").rglob("*.png")
    )
    assert len(written) == len(GOOD_IMAGES)


def test_exif_rotation_decides_the_mask_size(direct_run):
    _, output = direct_run
    # Stored 100 x 60 with orientation 6: the upright image, and so the mask, is 60 x 100.
    assert Image.open(output / "masks/dogs/deep/rotated.png").size == (60, 100)


def test_every_bad_file_is_an_error_with_a_reason(direct_run, tree):
    _, output = direct_run
    errors = {
        pathlib.Path(e["path"]).relative_to(tree).as_posix(): e
        for e in _read_lines(output / "errors")
    }
    assert set(errors) == set(BAD_IMAGES) | set(COLLISION_LOSERS)
    for relative in BAD_IMAGES:
        assert errors[relative]["stage"] == "decode"
        assert errors[relative]["error_type"] == "ImageDecodeError"
        assert errors[relative]["message"]
    assert "empty" in errors["empty.jpg"]["message"]
    assert "not an image" in errors["notes/readme.jpg"]["message"]
    loser = errors["collide/a.png"]
    assert (loser["stage"], loser["error_type"]) == ("match", "MaskCollisionError")
    assert str(tree / "collide/a.jpg") in loser["message"]


def test_statistics_cover_every_mask(direct_run, tree):
    _, output = direct_run
    records = _read_lines(output / "stats")
    assert [r["path"] for r in records] == sorted(str(tree / relative) for relative in GOOD_IMAGES)
    for record in records:
        relative = pathlib.Path(record["path"]).relative_to(tree).as_posix()
        width, height = GOOD_IMAGES[relative]
        mask = np.asarray(Image.open(output / record["mask_path"]))
        assert (record["width"], record["height"]) == (width, height)
        assert record["pixels"] == {
            name: int((mask == index).sum()) for index, name in enumerate(CLASS_NAMES)
        }
        assert sum(record["fractions"].values()) == pytest.approx(1.0, abs=1e-5)
        assert 1 / 3 <= record["mean_confidence"] <= 1.0
        assert record["model_id"] == MODEL_ID


def test_summary_reconciles(direct_run):
    summary, output = direct_run
    assert json.loads((output / "summary.json").read_text()) == summary
    matched = len(GOOD_IMAGES) + len(BAD_IMAGES) + len(COLLISION_LOSERS)
    assert summary["matched"] == matched
    assert summary["masks_written"] == summary["images"] == len(GOOD_IMAGES)
    assert summary["failed"] == len(BAD_IMAGES) + len(COLLISION_LOSERS)
    assert summary["failed_by_stage"]["decode"] == len(BAD_IMAGES)
    assert summary["failed_by_stage"]["match"] == len(COLLISION_LOSERS)
    assert summary["reconciliation"]["ok"] is True
    assert summary["model_id"] == MODEL_ID
    assert sum(summary["pet_fraction_histogram"]["counts"]) == len(GOOD_IMAGES)
    assert summary["wall_time_s"] > 0 and summary["images_per_second"] > 0


@pytest.mark.slow
def test_rerun_writes_byte_identical_outputs(direct_run, tree, model_dir, tmp_path):
    summary, output = direct_run
    before = snapshot(output)
    segment_job.run(_argv(tree, model_dir, output))
    assert snapshot(output) == before
    # A fresh output folder with overlays: the same masks and statistics, plus overlays.
    other = tmp_path / "other"
    segment_job.run(_argv(tree, model_dir, other, "--overlays"))
    fresh = snapshot(other)
    overlays = {name for name in fresh if name.startswith("overlays/")}
    assert len(overlays) == len(GOOD_IMAGES)
    assert {name: data for name, data in fresh.items() if name not in overlays} == before


def test_counters_account_for_every_file(tree, model_dir, tmp_path):
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from petseg.beam.job import SegmentConfig, prepare_job

    config = SegmentConfig(
        input=(str(tree),), model=str(model_dir), output=str(tmp_path / "out"), max_batch_size=4
    )
    job = prepare_job(config)
    pipeline = beam.Pipeline()
    build_pipeline(pipeline, job)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        counter.key.metric.name: counter.committed
        for counter in result.metrics().query(MetricsFilter().with_namespace("petseg"))["counters"]
    }
    # The collision loser is never read; the three bad files are read but not decoded.
    assert counters["read"] == len(GOOD_IMAGES) + len(BAD_IMAGES)
    assert counters["decoded"] == counters["masks_written"] == len(GOOD_IMAGES)
    assert counters["failed"] == len(BAD_IMAGES) + len(COLLISION_LOSERS)
    assert counters["failed_decode"] == len(BAD_IMAGES)
    assert counters["failed_match"] == len(COLLISION_LOSERS)
    total = sum(width * height for width, height in GOOD_IMAGES.values())
    assert sum(counters[f"pixels_{name}"] for name in CLASS_NAMES) == total


def test_segment_images_runs_from_python(tree, model_dir, tmp_path):
    summary = segment_images(
        str(tree / "dogs"), str(model_dir), str(tmp_path / "out"), max_batch_size=2
    )
    assert summary["masks_written"] == 4 and summary["failed"] == 1
    assert summary["inputs"] == [f"{tree}/dogs/**"]


def test_main_returns_zero_and_prints_a_result_line(tree, model_dir, tmp_path, capsys):
    # The tree's bad files and collision loser are 4 of 11 inputs.
    argv = _argv(tree, model_dir, tmp_path / "out", "--max-failed-fraction", "0.4")
    assert segment_job.main(argv) == 0
    err = capsys.readouterr().err
    assert "11 matched, 7 masks written (0 reused), 4 failed" in err and "error" not in err


def test_main_exits_3_when_more_inputs_fail_than_allowed(tree, model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    assert segment_job.main(_argv(tree, model_dir, output)) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        "petseg-segment: error: 4 of 11 inputs failed (36.36%), more than "
        f"--max-failed-fraction 0.0 allows; their reasons are in {output}/errors/"
    )
    # Every output is still written and consistent.
    assert json.loads((output / "summary.json").read_text())["reconciliation"]["ok"]


def test_main_fails_when_the_files_do_not_reconcile(tree, model_dir, tmp_path, capsys, monkeypatch):
    def unreconciled(argv=None, save_main_session=False):
        return {
            "matched": 3,
            "masks_written": 1,
            "masks_reused": 0,
            "masks_pruned": 0,
            "failed": 1,
            "wall_time_s": 1.0,
            "images_per_second": 3.0,
            "backend": "tensorflow",
            "reconciliation": {
                "ok": False,
                "rule": "matched == masks_written + failed",
                "difference": 1,
            },
        }

    monkeypatch.setattr(segment_job, "run", unreconciled)
    assert segment_job.main([]) == 1
    assert "do not reconcile" in capsys.readouterr().err


# ---- Bad configuration: exit 2, one line, no traceback, before any pipeline runs.


def _not_a_saved_model(tmp_path, model_dir):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    return folder


def _no_metadata(tmp_path, model_dir):
    folder = tmp_path / "no-json"
    shutil.copytree(model_dir, folder)
    (folder / "petseg.json").unlink()
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-model", "model directory not found"),
        ("not-saved-model", "is not a SavedModel"),
        ("no-metadata", "has no petseg.json"),
        ("output-is-input", "inside the input folder"),
        ("output-inside-input", "inside the input folder"),
        ("input-inside-output", "is inside --output"),
        ("output-not-writable", "is not writable"),
        ("input-matches-nothing", "matches no image files"),
        ("input-missing", "does not exist"),
        ("zero-batch", "--max-batch-size must be at least 1"),
        ("min-over-max", "is larger than --max-batch-size"),
        ("negative-pixels", "--max-pixels must be at least 1"),
        ("not-a-number", "invalid int value"),
        ("no-extensions", "names no extension"),
        ("no-input-flag", "the following arguments are required: --input"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(case, expected, tree, model_dir, tmp_path, capsys):
    model, output = model_dir, tmp_path / "out"
    inputs, extra = [str(tree)], []
    if case == "missing-model":
        model = tmp_path / "nope"
    elif case == "not-saved-model":
        model = _not_a_saved_model(tmp_path, model_dir)
    elif case == "no-metadata":
        model = _no_metadata(tmp_path, model_dir)
    elif case == "output-is-input":
        output = tree
    elif case == "output-inside-input":
        output = tree / "dogs" / "out"
    elif case == "input-inside-output":
        output = tree.parent
    elif case == "output-not-writable":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        output = blocker / "out"
    elif case == "input-matches-nothing":
        (tmp_path / "only-text").mkdir()
        (tmp_path / "only-text/readme.txt").write_text("no images here")
        inputs = [str(tmp_path / "only-text")]
    elif case == "input-missing":
        inputs = [str(tmp_path / "no-such-folder")]
    elif case == "zero-batch":
        extra = ["--max-batch-size", "0"]
    elif case == "min-over-max":
        extra = ["--min-batch-size", "8", "--max-batch-size", "4"]
    elif case == "negative-pixels":
        extra = ["--max-pixels", "-5"]
    elif case == "not-a-number":
        extra = ["--max-batch-size", "many"]
    elif case == "no-extensions":
        extra = ["--extensions", " , "]
    argv = [arg for text in inputs for arg in ("--input", text)]
    if case == "no-input-flag":
        argv = []
    argv += ["--model", str(model), "--output", str(output), *extra]

    assert segment_job.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("petseg-segment: error: ") and expected in lines[0], lines[0]
    if case not in ("output-is-input", "output-inside-input", "input-inside-output"):
        assert not output.exists() or not any(output.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing-model", "bad-number"])
def test_console_entry_exits_2_without_a_traceback(case, tree, model_dir, tmp_path):
    model = tmp_path / "nope" if case == "missing-model" else model_dir
    argv = _argv(tree, model, tmp_path / "out")
    if case == "bad-number":
        argv += ["--max-pixels", "0"]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "beam_jobs.segment", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "petseg-segment" in line]
    assert len(errors) == 1 and errors[0].startswith("petseg-segment: error: "), result.stderr


def test_oxford_sample_photos_get_masks_at_their_own_size(model_dir, tmp_path):
    sample = os.environ.get("PETSEG_OXFORD_SAMPLE", "")
    images = pathlib.Path(sample) / "images"
    if not sample or not images.is_dir():
        pytest.skip(
            f"PETSEG_OXFORD_SAMPLE not set or has no images/ ({sample!r}): real photos absent"
        )
    chosen = sorted(p.name for p in images.glob("*.jpg"))[:7] + ["Abyssinian_34.jpg"]
    chosen = sorted(set(chosen))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in chosen:
        shutil.copyfile(images / name, folder / name)
    assert (folder / "Abyssinian_34.jpg").read_bytes()[:3] == b"GIF"
    output = tmp_path / "out"
    summary = segment_job.run(_argv(folder, model_dir, output))
    assert summary["reconciliation"]["ok"] and summary["failed"] == 0
    assert summary["masks_written"] == len(chosen)
    for name in chosen:
        height, width = decode_image((folder / name).read_bytes()).shape[:2]
        mask = Image.open(output / "masks" / name.replace(".jpg", ".png"))
        assert mask.size == (width, height), name
        assert mask.mode == "P"


@pytest.mark.parametrize(
    "flags, expected",
    [
        ((), None),
        (("--runner", "DataflowRunner"), 1),
        (("--runner", "DataflowRunner", "--experiments", "no_use_multiple_sdk_containers"), None),
        (("--direct_running_mode", "multi_processing", "--direct_num_workers", "2"), "half"),
        (("--runner", "PortableRunner"), None),
    ],
)
def test_thread_defaults_fit_the_runner(flags, expected):
    from apache_beam.options.pipeline_options import PipelineOptions

    from petseg.beam.pipeline import default_threads
    from petseg.beam.threaded import available_cores

    if expected == "half":
        expected = max(1, available_cores() // 2)
    assert default_threads(PipelineOptions(list(flags))) == expected
