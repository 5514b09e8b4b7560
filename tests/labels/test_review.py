"""The review: a run's least sure images, their masks as Label Studio predictions."""

from __future__ import annotations

import json
import pathlib
import random

import numpy as np
import pytest

from beam_jobs import segment as segment_job
from petseg.beam.io import mask_relative_path
from petseg.beam.tables import read_table, stats_format
from petseg.beam.write import MaskProvenance, encode_mask, read_written_mask
from petseg.classes import BACKGROUND, CLASS_NAMES, PET
from petseg.labels import labelstudio, review
from tests.beam_helpers import GOOD_IMAGES, job_argv, write_image_tree

MODEL_ID = "review-test-model"
IMAGE_ROOT = "gs://pets/photos"
# Relative path -> mean confidence; two tie at 0.5.
CONFIDENCES = {
    "cat.jpg": 0.91,
    "dogs/rex b.png": 0.5,
    "dogs/ada.jpg": 0.5,
    "dogs/deep/max.jpg": 0.62,
    "bird.png": 0.77,
    "zebra.jpg": 0.3,
}


def class_map(seed: int, height: int = 40, width: int = 56) -> np.ndarray:
    """A background map with a pet box and scattered border pixels, different per seed."""
    rng = np.random.default_rng(seed)
    mask = np.full((height, width), BACKGROUND, np.uint8)
    top, left = rng.integers(0, 10, 2)
    mask[top : top + 20, left : left + 30] = PET
    mask[rng.random((height, width)) < 0.1] = 2
    return mask


def write_run(
    output: pathlib.Path,
    confidences: dict[str, float] = CONFIDENCES,
    table: str = "jsonl",
    provenance: bool = True,
) -> dict[str, np.ndarray]:
    """A finished run's OUT as the job writes it (masks, statistics in two shards,
    summary.json, petseg-run.json); returns each image's mask by relative path."""
    masks, lines = {}, []
    for seed, (relative, confidence) in enumerate(sorted(confidences.items())):
        mask = masks[relative] = class_map(seed, 32 + seed, 48 - seed)
        mask_path = mask_relative_path(relative)
        made = MaskProvenance(relative, 100, MODEL_ID, 4, confidence) if provenance else None
        (output / mask_path).parent.mkdir(parents=True, exist_ok=True)
        (output / mask_path).write_bytes(encode_mask(mask, provenance=made))
        pixels = {name: int((mask == i).sum()) for i, name in enumerate(CLASS_NAMES)}
        record = {
            "path": f"{IMAGE_ROOT}/{relative}",
            "mask_path": mask_path,
            "width": mask.shape[1],
            "height": mask.shape[0],
            "pixels": pixels,
            "fractions": {name: count / mask.size for name, count in pixels.items()},
            "mean_confidence": confidence,
            "model_id": MODEL_ID,
        }
        lines.append(json.dumps(record, sort_keys=True))
    encoder = stats_format(table, CLASS_NAMES)
    (output / "stats").mkdir(parents=True)
    for shard in range(2):
        name = f"stats-{shard:05d}-of-00002.{encoder.suffix}"
        (output / "stats" / name).write_bytes(encoder.encode(sorted(lines)[shard::2]))
    document = {"class_names": list(CLASS_NAMES), "model_id": MODEL_ID}
    (output / "petseg-run.json").write_text(json.dumps(document))
    (output / "summary.json").write_text(json.dumps({**document, "images": len(masks)}))
    return masks


def decoded(task: dict, shape: tuple[int, int]) -> np.ndarray:
    """A task's prediction decoded with Label Studio's converter."""
    results = task["predictions"][0]["result"]
    height, width = shape
    return labelstudio.class_map_from_results(results, width, height, CLASS_NAMES, BACKGROUND)


def _records(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = [
        {"path": f"/in/{index:05d}.jpg", "mean_confidence": rng.choice((0.2, 0.4, 0.6, 0.8))}
        for index in range(count)
    ]
    rng.shuffle(records)
    return records


def test_least_sure_picks_the_lowest_ties_by_path_in_any_order():
    records = _records(500, seed=0)
    expected = sorted(records, key=lambda record: (record["mean_confidence"], record["path"]))
    for seed in range(3):
        shuffled = random.Random(seed).sample(records, len(records))
        assert review.least_sure(iter(shuffled), 40) == expected[:40]
    assert review.least_sure(iter(records), 1000) == expected
    assert review.least_sure(iter(records), 0) == []


def test_least_sure_refuses_a_record_without_its_confidence():
    with pytest.raises(review.ReviewError, match="mean_confidence"):
        review.least_sure(iter([{"path": "a", "mean_confidence": 0.3}, {"path": "b"}]), 1)


@pytest.mark.parametrize("table", ["jsonl", "parquet"])
def test_the_review_holds_the_lowest_images_and_their_masks(tmp_path, table):
    masks = write_run(tmp_path / "out", table=table)
    result = review.build_review(str(tmp_path / "out"), 3)
    sources = [task["data"]["path"].removeprefix(IMAGE_ROOT + "/") for task in result.tasks]
    assert sources == ["zebra.jpg", "dogs/ada.jpg", "dogs/rex b.png"]
    assert (result.images, result.lowest, result.highest) == (6, 0.3, 0.5)
    for task, source in zip(result.tasks, sources, strict=True):
        assert task["data"]["image"] == f"{IMAGE_ROOT}/{source}"
        assert task["data"]["mask_path"] == mask_relative_path(source)
        assert task["data"]["mean_confidence"] == CONFIDENCES[source]
        prediction = task["predictions"][0]
        assert (prediction["model_version"], prediction["score"]) == (MODEL_ID, CONFIDENCES[source])
        np.testing.assert_array_equal(decoded(task, masks[source].shape), masks[source])
    assert result.config == labelstudio.labeling_config(CLASS_NAMES, BACKGROUND)
    everything = review.build_review(str(tmp_path / "out"), 100)
    assert len(everything.tasks) == 6 and everything.highest == 0.91


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (None, f"{IMAGE_ROOT}/dogs/rex b.png"),
        ("https://labels.example/pets/", "https://labels.example/pets/dogs/rex%20b.png"),
        ("s3://other/pets", "s3://other/pets/dogs/rex b.png"),
        ("/data/local-files/?d=pets", "/data/local-files/?d=pets/dogs/rex b.png"),
    ],
)
def test_image_urls_are_the_image_or_the_root_joined_with_its_relative_path(root, expected):
    record = {"path": f"{IMAGE_ROOT}/dogs/rex b.png", "mask_path": "masks/dogs/rex b.png"}
    assert review.image_url(record, "dogs/rex b.png", root) == expected


def test_an_image_root_needs_masks_that_record_their_source(tmp_path):
    write_run(tmp_path / "out", provenance=False)
    assert len(review.build_review(str(tmp_path / "out"), 2).tasks) == 2
    with pytest.raises(review.ReviewError, match="--image-root"):
        review.build_review(str(tmp_path / "out"), 2, "https://x")


def _unfinished(output: pathlib.Path) -> None:
    (output / "summary.json").unlink()


def _without_stats(output: pathlib.Path) -> None:
    for path in (output / "stats").iterdir():
        path.unlink()


def _without_a_mask(output: pathlib.Path) -> None:
    (output / "masks" / "zebra.png").unlink()


def _with_a_corrupt_table(output: pathlib.Path) -> None:
    (output / "stats" / "stats-00001-of-00002.jsonl").write_text("{not json\n")


def _with_a_resized_mask(output: pathlib.Path) -> None:
    (output / "masks" / "zebra.png").write_bytes(encode_mask(np.zeros((5, 5), np.uint8)))


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_unfinished, "not a finished segmentation run: it has no summary.json"),
        (_without_stats, "has no statistics tables under stats/"),
        (_with_a_corrupt_table, "cannot read "),
        (_without_a_mask, "cannot read the mask"),
        (_with_a_resized_mask, "is 5x5, but its statistics say"),
    ],
)
def test_an_unreviewable_output_is_one_line(tmp_path, damage, fragment):
    write_run(tmp_path / "out")
    damage(tmp_path / "out")
    with pytest.raises(review.ReviewError) as raised:
        review.build_review(str(tmp_path / "out"), 2)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def job_output(model_dir, tmp_path_factory):
    """A real run of the job on the image tree of the Beam tests."""
    tree = write_image_tree(tmp_path_factory.mktemp("review-tree") / "in")
    output = tmp_path_factory.mktemp("review-run") / "out"
    segment_job.run(job_argv(tree, model_dir, output))
    return tree, output


def test_a_jobs_output_gives_its_least_sure_masks(job_output):
    tree, output = job_output
    records = read_table([str(path) for path in (output / "stats").glob("stats-*")])
    lowest = sorted(records, key=lambda record: (record["mean_confidence"], record["path"]))[:3]
    result = review.build_review(str(output), 3, "https://labels.example/in")
    assert [task["data"]["path"] for task in result.tasks] == [r["path"] for r in lowest]
    assert result.images == len(GOOD_IMAGES)
    for task, record in zip(result.tasks, lowest, strict=True):
        relative = pathlib.Path(record["path"]).relative_to(tree).as_posix()
        assert task["data"]["image"] == f"https://labels.example/in/{relative}"
        mask, _ = read_written_mask((output / record["mask_path"]).read_bytes())
        assert mask.shape == GOOD_IMAGES[relative][::-1]
        np.testing.assert_array_equal(decoded(task, mask.shape), mask)
