"""One run per OUT: reruns resume, changed inputs are pruned, another run is refused.

Each case runs the real job (DirectRunner, the tiny exported model) twice
into one OUT and compares it, file for file, with a single run into a fresh
folder over the same inputs: after any run that exits 0, OUT's masks,
statistics and summary describe exactly the images matched now.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from beam_jobs import segment as segment_job
from petseg.beam.layout import RUN_RECORD_FILE
from petseg.beam.write import read_written_mask
from tests.beam_helpers import job_argv, snapshot
from tests.images import gradient, jpeg

IMAGES = 24
BAD = {"bad/empty.jpg": b""}
# Fields that describe how a run went rather than what it wrote.
RUN_FIELDS = ("wall_time_s", "images_per_second", "masks_reused", "masks_pruned")


def _write_inputs(root: pathlib.Path, count: int = IMAGES) -> pathlib.Path:
    for index in range(count):
        pixels = ((gradient(40 + index % 5, 30).astype(int) + 9 * index) % 256).astype(np.uint8)
        path = root / f"set{index % 3}" / f"pet{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(pixels))
    for relative, data in BAD.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


def _run(inputs, model_dir, output, *extra: str) -> dict:
    return segment_job.run(job_argv(inputs, model_dir, output, *extra))


def _main(inputs, model_dir, output, *extra: str) -> int:
    return segment_job.main(job_argv(inputs, model_dir, output, *extra))


def _summary(output: pathlib.Path) -> dict:
    summary = json.loads((output / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in RUN_FIELDS}


def _outputs(output: pathlib.Path) -> dict[str, bytes]:
    """Masks, statistics and errors: everything a run writes but its summary and record."""
    return {
        name: data
        for name, data in snapshot(output).items()
        if name.split("/")[0] in ("masks", "stats", "errors", "overlays")
    }


def _assert_same_as_fresh_run(output, inputs, model_dir, tmp_path, *extra: str) -> None:
    fresh = tmp_path / "fresh"
    _run(inputs, model_dir, fresh, *extra)
    assert _outputs(output) == _outputs(fresh)
    assert _summary(output) == _summary(fresh)


@pytest.fixture
def inputs(tmp_path):
    return _write_inputs(tmp_path / "in")


def test_rerun_reuses_every_committed_mask_and_writes_the_same_bytes(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    first = _run(inputs, model_dir, output)
    assert first["masks_written"] == IMAGES and first["masks_reused"] == 0
    before = _outputs(output)

    again = _run(inputs, model_dir, output)
    assert again["masks_written"] == IMAGES and again["masks_reused"] == IMAGES
    assert again["failed"] == len(BAD) and again["reconciliation"]["ok"]
    assert _outputs(output) == before
    _assert_same_as_fresh_run(output, inputs, model_dir, tmp_path)


def test_each_mask_records_its_provenance(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    records = [json.loads(line) for line in (output / "stats/stats-00000-of-00001.jsonl").open()]
    record = next(r for r in records if r["path"].endswith("set1/pet004.jpg"))
    mask, provenance = read_written_mask((output / record["mask_path"]).read_bytes())
    assert provenance.source == "set1/pet004.jpg"
    assert provenance.source_bytes == (inputs / "set1/pet004.jpg").stat().st_size
    assert provenance.model_id == record["model_id"] and provenance.batch_size == 4
    assert provenance.mean_confidence == record["mean_confidence"]
    assert mask.shape == (record["height"], record["width"])


def test_deleted_and_added_inputs_prune_stale_masks_and_segment_new_ones(
    inputs, model_dir, tmp_path
):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    removed = ["set0/pet000.jpg", "set1/pet001.jpg", "set2/pet002.jpg"]
    for relative in removed:
        (inputs / relative).unlink()
    shutil.rmtree(inputs / "set2")  # A whole folder gone: its masks' folder must go too.
    gone = {f"set2/pet{index:03d}.jpg" for index in range(2, IMAGES, 3)} | set(removed)
    (inputs / "new").mkdir()
    (inputs / "new/late.jpg").write_bytes(jpeg(gradient(52, 36)))

    summary = _run(inputs, model_dir, output)
    kept = IMAGES - len(gone)
    assert summary["masks_written"] == kept + 1 and summary["masks_reused"] == kept
    assert summary["masks_pruned"] == len(gone)
    assert not (output / "masks/set2").exists()
    assert (output / "masks/new/late.png").is_file()
    _assert_same_as_fresh_run(output, inputs, model_dir, tmp_path)


def test_an_input_replaced_by_another_file_is_segmented_again(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    target = inputs / "set0/pet003.jpg"
    old_mask = (output / "masks/set0/pet003.png").read_bytes()
    target.write_bytes(jpeg(255 - gradient(70, 50)))

    summary = _run(inputs, model_dir, output)
    assert summary["masks_reused"] == IMAGES - 1
    assert (output / "masks/set0/pet003.png").read_bytes() != old_mask
    _assert_same_as_fresh_run(output, inputs, model_dir, tmp_path)


def test_an_input_that_now_fails_loses_its_old_mask(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    (inputs / "set1/pet004.jpg").write_bytes(b"truncated now")

    summary = _run(inputs, model_dir, output)
    assert summary["failed"] == len(BAD) + 1 and summary["reconciliation"]["ok"]
    assert not (output / "masks/set1/pet004.png").exists()
    _assert_same_as_fresh_run(output, inputs, model_dir, tmp_path)


def test_leftovers_of_a_killed_run_and_foreign_files_are_pruned(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    (output / "summary.json").unlink()  # As a killed run leaves it.
    (output / "masks/set0/.pet000.png.tmp-0123456789abcdef0123456789abcdef").write_bytes(b"x")
    (output / "masks/notes.txt").write_text("not a mask")
    (output / "masks/set0/pet000.png").write_bytes(b"cut short by hand")

    summary = _run(inputs, model_dir, output)
    assert summary["masks_reused"] == IMAGES - 1
    _assert_same_as_fresh_run(output, inputs, model_dir, tmp_path)


def _other_model(model_dir: pathlib.Path, tmp_path: pathlib.Path, model_id: str) -> pathlib.Path:
    copy = tmp_path / "other-model"
    shutil.copytree(model_dir, copy)
    metadata = json.loads((copy / "petseg.json").read_text())
    metadata["model_id"] = model_id
    (copy / "petseg.json").write_text(json.dumps(metadata))
    return copy


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def test_another_model_is_refused_and_overwrite_replaces_the_run(
    inputs, model_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    assert _main(inputs, model_dir, output, "--max-failed-fraction", "0.5") == 0
    before = snapshot(output)
    capsys.readouterr()
    other = _other_model(model_dir, tmp_path, "tiny-unet-retrained")

    assert _main(inputs, other, output, "--max-failed-fraction", "0.5") == 2
    (line,) = _error_lines(capsys)
    assert "the model: tiny-unet-retrained here, tiny-unet-test in OUT" in line
    assert "--overwrite" in line and "new --output" in line
    assert snapshot(output) == before  # Refused before anything was touched.

    assert _main(inputs, other, output, "--max-failed-fraction", "0.5", "--overwrite") == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["masks_reused"] == 0 and summary["model_id"] == "tiny-unet-retrained"
    record = json.loads((output / RUN_RECORD_FILE).read_text())
    assert record["model_id"] == "tiny-unet-retrained"
    for path in (output / "masks").rglob("*.png"):
        assert read_written_mask(path.read_bytes())[1].model_id == "tiny-unet-retrained"
    _assert_same_as_fresh_run(output, inputs, other, tmp_path)


@pytest.mark.parametrize(
    "changed, named",
    [
        (("--max-batch-size", "8"), "--max-batch-size: 8 here, 4 in OUT"),
        (("--overlays",), "--overlays: True here, False in OUT"),
        (("--extensions", "jpg"), "--extensions: jpg here"),
        (("--max-pixels", "1000000"), "--max-pixels: 1000000 here"),
        (("--coco",), "--coco/--coco-classes: pet,border here, None in OUT"),
    ],
)
def test_a_setting_that_changes_outputs_is_refused(
    changed, named, inputs, model_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    capsys.readouterr()
    argv = job_argv(inputs, model_dir, output)
    if changed[0] == "--max-batch-size":
        argv[argv.index("--max-batch-size") + 1] = changed[1]
    else:
        argv += changed
    assert segment_job.main(argv) == 2
    (line,) = _error_lines(capsys)
    assert named in line


def test_settings_that_only_change_speed_resume(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    summary = _run(inputs, model_dir, output, "--threads", "1", "--min-batch-size", "2")
    assert summary["masks_reused"] == IMAGES


def test_another_input_folder_is_refused(inputs, model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    _run(inputs, model_dir, output)
    capsys.readouterr()
    elsewhere = _write_inputs(tmp_path / "elsewhere", 3)
    assert _main(elsewhere, model_dir, output) == 2
    (line,) = _error_lines(capsys)
    assert f"--input: {elsewhere}/** here, {inputs}/** in OUT" in line


def test_outputs_without_a_run_record_are_refused(inputs, model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    (output / "masks").mkdir(parents=True)
    (output / "masks/someone-elses.png").write_bytes(b"x")
    assert _main(inputs, model_dir, output) == 2
    (line,) = _error_lines(capsys)
    assert "without a petseg-run.json" in line and "--overwrite" in line
    assert (output / "masks/someone-elses.png").exists()


def test_an_unrelated_file_in_out_is_left_alone(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "README.txt").write_text("results of the pets run\n")
    _run(inputs, model_dir, output)
    _run(inputs, model_dir, output, "--overwrite")
    assert (output / "README.txt").read_text() == "results of the pets run\n"


def test_exit_status_follows_max_failed_fraction(inputs, model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    # One bad file of 25: 4 %.
    assert _main(inputs, model_dir, output) == 3
    (line,) = _error_lines(capsys)
    assert "1 of 25 inputs failed (4.00%)" in line and f"{output}/errors/" in line
    assert json.loads((output / "summary.json").read_text())["reconciliation"]["ok"]
    assert _main(inputs, model_dir, output, "--max-failed-fraction", "0.04") == 0
    assert _main(inputs, model_dir, output, "--max-failed-fraction", "0.03") == 3
    assert _main(inputs, model_dir, output, "--max-failed-fraction", "1.5") == 2
