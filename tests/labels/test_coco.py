"""COCO records of class maps: pycocotools decodes each to exactly its class's pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from petseg.classes import CLASS_NAMES
from petseg.labels import coco


def _class_map(seed: int, height: int = 23, width: int = 31) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.ones((height, width), np.uint8)  # background
    mask[3:15, 4:20] = 0  # a pet
    mask[rng.random((height, width)) < 0.1] = 2  # scattered border pixels
    return mask


def test_each_annotation_decodes_to_exactly_its_class():
    mask = _class_map(0)
    annotations = coco.class_annotations(mask, (0, 2), (0.9, 0.8, 0.7))
    assert [a["category_id"] for a in annotations] == [1, 3]
    for annotation in annotations:
        index = annotation["category_id"] - 1
        decoded = mask_utils.decode(
            {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
        )
        np.testing.assert_array_equal(decoded, mask == index)
        assert annotation["area"] == int(np.count_nonzero(mask == index))
        rows, cols = np.nonzero(mask == index)
        assert annotation["bbox"] == [
            cols.min(),
            rows.min(),
            cols.max() - cols.min() + 1,
            rows.max() - rows.min() + 1,
        ]
        assert annotation["score"] == (0.9, 0.8, 0.7)[index]
        assert annotation["iscrowd"] == 0


def test_a_class_absent_from_the_map_has_no_annotation():
    mask = np.ones((5, 6), np.uint8)
    mask[0, 0] = 0
    assert [a["category_id"] for a in coco.class_annotations(mask, (0, 2), (1, 1, 1))] == [1]


def test_class_scores_are_each_class_mean_confidence():
    mask = np.array([[0, 0, 1], [2, 1, 1]], np.uint8)
    confidence = np.array([[0.9, 0.7, 0.6], [0.5, 0.8, 1.0]], np.float32)
    assert coco.class_scores(mask, confidence, 4) == pytest.approx((0.8, 0.8, 0.5, 0.0))


def _lines(maps: list[np.ndarray]) -> list[str]:
    lines = []
    for number, mask in enumerate(maps):
        height, width = mask.shape
        image = {
            "file_name": f"p{number}.jpg",
            "width": width,
            "height": height,
            "path": f"/in/p{number}.jpg",
            "mask_path": f"masks/p{number}.png",
        }
        lines.append(coco.image_row(image, coco.class_annotations(mask, (0, 2), (1, 1, 1)))[1])
    return lines


def test_the_file_streams_in_chunks_and_loads_with_pycocotools(tmp_path, monkeypatch):
    monkeypatch.setattr(coco, "CHUNK_ITEMS", 2)  # several chunks of images and annotations
    maps = [_class_map(seed, 10 + seed, 12) for seed in range(5)]
    maps.append(np.ones((4, 4), np.uint8))  # all background: an image without annotations
    lines = _lines(maps)
    tally: dict[str, int] = {}
    chunks = list(
        coco.document_chunks(
            lambda: iter(lines), {"version": "m"}, coco.categories(CLASS_NAMES, (0, 2)), tally
        )
    )
    assert len(chunks) > 6
    path = tmp_path / "coco.json"
    path.write_bytes(b"".join(chunks))
    assert json.loads(path.read_text())["categories"] == [
        {"id": 1, "name": "pet", "supercategory": "pet"},
        {"id": 3, "name": "border", "supercategory": "pet"},
    ]
    loaded = COCO(str(path))
    assert sorted(loaded.imgs) == [1, 2, 3, 4, 5, 6] and tally["images"] == 6
    assert len(loaded.anns) == tally["annotations"] == 10
    for annotation in loaded.anns.values():
        mask = maps[annotation["image_id"] - 1]
        np.testing.assert_array_equal(
            loaded.annToMask(annotation), mask == annotation["category_id"] - 1
        )
    assert loaded.getAnnIds(imgIds=[6]) == []
    # Its annotations are also a results file.
    results = loaded.loadRes(list(loaded.anns.values()))
    assert len(results.anns) == 10


def test_the_same_lines_give_the_same_bytes():
    lines = _lines([_class_map(1), _class_map(2)])

    def document() -> bytes:
        return b"".join(coco.document_chunks(lambda: iter(lines), {}, []))

    assert document() == document()
