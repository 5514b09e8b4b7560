"""The job's COCO output (``--coco``): every annotation is its mask's class, and
``coco.json`` obeys the job's guarantees (accounting, resume, byte-identical reruns)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from beam_jobs import segment as segment_job
from petseg.beam.layout import COCO_DIR, COCO_FILE, RUN_RECORD_FILE
from tests.beam_helpers import BAD_IMAGES, GOOD_IMAGES, job_argv, write_image_tree


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("coco") / "in")


@pytest.fixture(scope="module")
def segmented(inputs, model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("coco-out") / "out"
    summary = segment_job.run(job_argv(inputs, model_dir, output, "--coco"))
    return output, summary


def _mask(output: pathlib.Path, image: dict) -> np.ndarray:
    with Image.open(output / image["mask_path"]) as mask:
        return np.asarray(mask)


def test_every_annotation_decodes_to_exactly_its_class_in_the_mask(segmented):
    output, _ = segmented
    coco = COCO(str(output / COCO_FILE))
    assert {category["name"] for category in coco.cats.values()} == {"pet", "border"}
    checked = 0
    for image_id, image in coco.imgs.items():
        mask = _mask(output, image)
        assert mask.shape == (image["height"], image["width"])
        annotated = {coco.anns[ann]["category_id"] for ann in coco.getAnnIds(imgIds=[image_id])}
        # One annotation per foreground class the mask holds, and none for background.
        assert annotated == {index + 1 for index in (0, 2) if (mask == index).any()}
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            expected = mask == annotation["category_id"] - 1
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), expected)
            assert annotation["area"] == int(expected.sum())
            assert 0.0 < annotation["score"] <= 1.0
            checked += 1
    assert checked > 0


def test_every_segmented_image_is_in_the_file_once_and_failures_are_not(segmented, inputs):
    output, summary = segmented
    document = json.loads((output / COCO_FILE).read_text())
    names = [image["file_name"] for image in document["images"]]
    # Each good image once (collide/a.png lost its mask path to collide/a.jpg).
    assert sorted(names) == sorted(GOOD_IMAGES)
    assert not set(names) & set(BAD_IMAGES)
    for image in document["images"]:
        assert image["path"] == str(inputs / image["file_name"])
        assert (image["width"], image["height"]) == GOOD_IMAGES[image["file_name"]]
    assert summary["coco"] == {
        "file": COCO_FILE,
        "classes": ["pet", "border"],
        "images": summary["masks_written"],
        "annotations": len(document["annotations"]),
    }
    assert [a["id"] for a in document["annotations"]] == list(
        range(1, len(document["annotations"]) + 1)
    )
    record = json.loads((output / RUN_RECORD_FILE).read_text())
    assert record["coco"] == ["pet", "border"]


def test_a_rerun_reuses_every_mask_and_writes_the_same_bytes(segmented, inputs, model_dir):
    output, _ = segmented
    before = (output / COCO_FILE).read_bytes()
    shards = {path.name: path.read_bytes() for path in (output / COCO_DIR).iterdir()}
    summary = segment_job.run(job_argv(inputs, model_dir, output, "--coco"))
    assert summary["masks_reused"] == summary["masks_written"] == len(GOOD_IMAGES)
    assert (output / COCO_FILE).read_bytes() == before
    assert {path.name: path.read_bytes() for path in (output / COCO_DIR).iterdir()} == shards


def test_a_resumed_run_gives_the_file_of_an_uninterrupted_one(
    segmented, inputs, model_dir, tmp_path
):
    reference, _ = segmented
    output = tmp_path / "out"
    segment_job.run(job_argv(inputs, model_dir, output, "--coco"))
    # As a run killed half way leaves OUT: some masks committed, no summary, no file.
    for mask in sorted((output / "masks").rglob("*.png"))[::2]:
        mask.unlink()
    (output / "summary.json").unlink()
    (output / COCO_FILE).unlink()
    summary = segment_job.run(job_argv(inputs, model_dir, output, "--coco"))
    assert 0 < summary["masks_reused"] < summary["masks_written"]
    assert (output / COCO_FILE).read_bytes() == (reference / COCO_FILE).read_bytes()


def test_coco_classes_chooses_the_annotated_classes(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    segment_job.run(job_argv(inputs, model_dir, output, "--coco", "--coco-classes", "border"))
    coco = COCO(str(output / COCO_FILE))
    assert [category["name"] for category in coco.cats.values()] == ["border"]
    assert {annotation["category_id"] for annotation in coco.anns.values()} == {3}


def test_without_coco_the_job_writes_none(inputs, model_dir, tmp_path):
    output = tmp_path / "out"
    summary = segment_job.run(job_argv(inputs, model_dir, output))
    assert "coco" not in summary
    assert not (output / COCO_FILE).exists() and not (output / COCO_DIR).exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (("--coco-classes", "pet"), "--coco-classes needs --coco"),
        (("--coco", "--coco-classes", "pet,tiger"), "a class the model does not have (tiger)"),
        (("--coco", "--coco-classes", ","), "names no class"),
    ],
)
def test_bad_coco_flags_are_refused_with_one_line(
    flags, words, inputs, model_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    assert segment_job.main(job_argv(inputs, model_dir, output, *flags)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0]
    assert not output.exists() or not any(output.iterdir())
