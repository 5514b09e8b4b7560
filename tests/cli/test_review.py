"""``petseg review``: both files written, the same bytes on a rerun, mistakes refused in one line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from petseg.beam.write import read_written_mask
from petseg.cli import main as cli
from petseg.cli import review as review_cli
from tests.labels.test_review import CONFIDENCES, IMAGE_ROOT, decoded, write_run


@pytest.fixture
def run_output(tmp_path):
    masks = write_run(tmp_path / "out")
    return tmp_path / "out", masks


def test_review_writes_the_tasks_and_the_config(run_output, tmp_path, capsys):
    output, masks = run_output
    target = tmp_path / "review"
    argv = ["review", str(output), "--lowest", "4", "--output", str(target)]
    assert cli.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    assert "wrote 4 of 6 images" in line and "mean confidence 0.300 to 0.620" in line
    tasks = json.loads((target / "tasks.json").read_text())
    sources = [task["data"]["image"].removeprefix(IMAGE_ROOT + "/") for task in tasks]
    assert sources == ["zebra.jpg", "dogs/ada.jpg", "dogs/rex b.png", "dogs/deep/max.jpg"]
    for task, source in zip(tasks, sources, strict=True):
        assert task["predictions"][0]["score"] == CONFIDENCES[source]
        np.testing.assert_array_equal(decoded(task, masks[source].shape), masks[source])
    config = ElementTree.fromstring((target / "labeling-config.xml").read_text())
    assert [label.get("value") for label in config.find("BrushLabels")] == ["pet", "border"]
    written = {path.name: path.read_bytes() for path in target.iterdir()}
    assert sorted(written) == ["labeling-config.xml", "tasks.json"]  # no temporaries left
    # A rerun writes the same bytes.
    assert cli.main(argv) == 0
    assert {path.name: path.read_bytes() for path in target.iterdir()} == written


def test_an_image_root_names_each_image_below_it(run_output, tmp_path, capsys):
    output, _ = run_output
    target = tmp_path / "review"
    root = "https://labels.example/pets"
    argv = [str(output), "--lowest", "2", "--image-root", root, "--output", str(target)]
    assert review_cli.main(argv) == 0
    tasks = json.loads((target / "tasks.json").read_text())
    assert [task["data"]["image"] for task in tasks] == [
        f"{root}/zebra.jpg",
        f"{root}/dogs/ada.jpg",
    ]


def test_an_empty_run_writes_an_empty_task_list(tmp_path, capsys):
    write_run(tmp_path / "out", confidences={})
    assert review_cli.main([str(tmp_path / "out"), "--output", str(tmp_path / "review")]) == 0
    assert json.loads((tmp_path / "review" / "tasks.json").read_text()) == []
    assert "lists no images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--lowest", "0", "--output", "{tmp}/review"], "--lowest must be at least 1, got 0"),
        (["--lowest", "many", "--output", "{tmp}/review"], "invalid int value: 'many'"),
        (["--lowst", "3", "--output", "{tmp}/review"], "unknown flag --lowst (did you mean --lowest?)"),
        ([], "the following arguments are required: --output"),
        (["--output", "{tmp}/out/review"], "is inside OUT"),
        (["--output", "{tmp}/out"], "is inside OUT"),
    ],
)  # fmt: skip
def test_bad_flags_exit_2_with_one_line(run_output, tmp_path, capsys, flags, fragment):
    output, _ = run_output
    argv = [str(output), *(flag.format(tmp=tmp_path) for flag in flags)]
    with pytest.raises(SystemExit) as exited:
        review_cli.main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("petseg review: error: ") and fragment in captured.err
    assert captured.err.count("\n") == 1
    assert not (tmp_path / "review").exists()


def _unfinished(output):
    (output / "summary.json").unlink()


def _without_stats(output):
    for path in (output / "stats").iterdir():
        path.unlink()


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_unfinished, "is not a finished segmentation run: it has no summary.json"),
        (_without_stats, "has no statistics tables under stats/"),
    ],
)
def test_an_unreviewable_output_exits_2_with_one_line(
    run_output, tmp_path, capsys, damage, fragment
):
    output, _ = run_output
    damage(output)
    with pytest.raises(SystemExit) as exited:
        cli.main(["review", str(output), "--output", str(tmp_path / "review")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("petseg review: error: ") and fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "review").exists()


def test_the_umbrella_command_lists_review(capsys):
    assert cli.main(["--help"]) == 0
    assert "petseg review OUT" in capsys.readouterr().out
    assert cli.main(["reveiw"]) == 2
    assert "did you mean review?" in capsys.readouterr().err


def test_an_unwritable_output_exits_1_with_one_line(run_output, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("petseg.beam.faults.WRITE_RETRY_DELAY_S", 0.01)
    output, _ = run_output
    (tmp_path / "a-file").write_text("not a folder")
    assert review_cli.main([str(output), "--output", str(tmp_path / "a-file" / "review")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("petseg review: error: cannot write ") and err.count("\n") == 1, err


def test_a_run_in_a_bucket_is_reviewed_into_the_bucket_with_its_images_urls(
    store, model_dir, tmp_path, capsys
):
    from beam_jobs import segment as segment_job
    from tests.beam_helpers import GOOD_IMAGES, job_argv, write_image_tree
    from tests.buckets import BUCKET, bucket_objects, s3_flags, upload

    endpoint, client = store
    # moto keeps its buckets per process, not per server: a prefix of this test's own.
    base = "cli-review"
    upload(client, write_image_tree(tmp_path / "in"), f"{base}/in")
    run = f"s3://{BUCKET}/{base}/out"
    argv = job_argv(f"s3://{BUCKET}/{base}/in/", model_dir, run, "--coco")
    assert segment_job.main([*argv, "--max-failed-fraction", "1", *s3_flags(endpoint)]) == 0
    capsys.readouterr()

    review = ["review", run, "--output", f"s3://{BUCKET}/{base}/review", "--lowest", "3"]
    assert cli.main([*review, *s3_flags(endpoint)]) == 0
    assert "wrote 3 of 7 images" in capsys.readouterr().out
    written = bucket_objects(client, f"{base}/review")
    tasks = json.loads(written["tasks.json"])
    assert len(tasks) == 3 and "labeling-config.xml" in written
    masks = bucket_objects(client, f"{base}/out/masks")
    for task in tasks:
        image = task["data"]["image"]
        # An image in a bucket is named by its URL, which Label Studio reads through the
        # bucket connected as the project's storage.
        relative = image.removeprefix(f"s3://{BUCKET}/{base}/in/")
        assert relative in GOOD_IMAGES and image.startswith("s3://")
        mask, _ = read_written_mask(masks[task["data"]["mask_path"].removeprefix("masks/")])
        np.testing.assert_array_equal(decoded(task, mask.shape), mask)


def test_a_filesystem_flag_is_checked_like_any_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["review", "out", "--output", "dir", "--s3_endpoint_urll", "http://x"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown flag --s3_endpoint_urll (did you mean --s3_endpoint_url?)" in line
