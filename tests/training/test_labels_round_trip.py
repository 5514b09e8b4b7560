"""The loop closes: what the job (``--coco``) and ``petseg review`` write, training reads
back as exactly the job's masks."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from beam_jobs import segment as segment_job
from petseg.beam.write import read_written_mask
from petseg.imageio import decode_image
from petseg.labels.review import build_review, write_review
from petseg.training.data.labels import read_label_file
from tests.beam_helpers import GOOD_IMAGES, job_argv, write_image_tree


@pytest.fixture(scope="module")
def job_output(model_dir, tmp_path_factory):
    tree = write_image_tree(tmp_path_factory.mktemp("loop") / "in")
    output = tmp_path_factory.mktemp("loop-out") / "out"
    segment_job.run(job_argv(tree, model_dir, output, "--coco"))
    return tree, output


def _masks_by_image(output: pathlib.Path) -> dict[str, np.ndarray]:
    masks = {}
    for path in (output / "masks").rglob("*.png"):
        mask, provenance = read_written_mask(path.read_bytes())
        masks[provenance.source] = mask
    return masks


def _class_maps(report, tree: pathlib.Path) -> dict[str, np.ndarray]:
    maps = {}
    for record in report.records:
        height, width = decode_image(pathlib.Path(record.image_path).read_bytes()).shape[:2]
        relative = pathlib.Path(record.image_path).relative_to(tree).as_posix()
        maps[relative] = record.class_map(height, width)
    return maps


def test_the_jobs_coco_file_reads_back_as_its_masks(job_output):
    tree, output = job_output
    # coco.json lies in OUT, not beside the images: each image is found at its path.
    report = read_label_file(str(output / "coco.json"))
    assert report.kind == "COCO" and not report.bad
    maps = _class_maps(report, tree)
    masks = _masks_by_image(output)
    assert sorted(maps) == sorted(masks) == sorted(GOOD_IMAGES)
    for relative, mask in masks.items():
        np.testing.assert_array_equal(maps[relative], mask, err_msg=relative)


def test_review_tasks_accepted_as_they_are_read_back_as_the_masks(job_output, tmp_path):
    tree, output = job_output
    tasks_path, _ = write_review(build_review(str(output), len(GOOD_IMAGES)), str(tmp_path))
    # What Label Studio exports when each prediction is submitted unchanged.
    tasks = json.loads(pathlib.Path(tasks_path).read_text())
    for number, task in enumerate(tasks, start=1):
        task["id"] = number
        task["annotations"] = [
            {"id": number, "was_cancelled": False, "result": task["predictions"][0]["result"]}
        ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    report = read_label_file(str(export))
    assert report.kind == "Label Studio" and not report.bad
    maps = _class_maps(report, tree)
    masks = _masks_by_image(output)
    assert sorted(maps) == sorted(masks)
    for relative, mask in masks.items():
        np.testing.assert_array_equal(maps[relative], mask, err_msg=relative)
