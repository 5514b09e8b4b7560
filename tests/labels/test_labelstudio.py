"""Label Studio brush labels: Label Studio's own converter decodes predictions back to the mask."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from label_studio_converter.brush import decode_rle, mask2rle

from petseg.classes import BACKGROUND, CLASS_NAMES, PET
from petseg.drawing import CLASS_COLOURS
from petseg.labels import BRUSH_NAME, IMAGE_NAME, LabelError, labelstudio
from tests.conftest import REPO_ROOT


def _class_map(seed: int, height: int = 37, width: int = 53) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.full((height, width), BACKGROUND, np.uint8)
    mask[4:30, 6:40] = PET
    mask[rng.random((height, width)) < 0.15] = 2  # scattered border pixels
    return mask


MASKS = {
    "blobs": _class_map(0),
    "other blobs": _class_map(1, 64, 32),
    "all background": np.full((32, 48), BACKGROUND, np.uint8),
    "all pet": np.full((33, 33), PET, np.uint8),
    "one pixel": np.pad(np.zeros((1, 1), np.uint8), ((5, 40), (7, 1)), constant_values=1),
    "checkerboard": (np.indices((40, 41)).sum(axis=0) % 3).astype(np.uint8),
}


def _brush(label: str, painted: np.ndarray, **fields) -> dict:
    height, width = painted.shape
    item = {
        "id": label,
        "type": "brushlabels",
        "from_name": BRUSH_NAME,
        "to_name": IMAGE_NAME,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask2rle(painted.astype(np.uint8) * 255)},
    }
    item["value"]["brushlabels"] = [label]
    item.update(fields)
    return item


@pytest.mark.parametrize("name", sorted(MASKS))
def test_predictions_decode_back_to_the_same_mask(name):
    mask = MASKS[name]
    height, width = mask.shape
    task = labelstudio.review_task(
        "gs://pets/a.jpg", mask, CLASS_NAMES, BACKGROUND, "model-1", 0.7, {"mask_path": "m.png"}
    )
    # Through JSON, as Label Studio imports and exports it.
    results = json.loads(json.dumps(task))["predictions"][0]["result"]
    decoded = labelstudio.class_map_from_results(results, width, height, CLASS_NAMES, BACKGROUND)
    np.testing.assert_array_equal(decoded, mask)
    assert decoded.dtype == np.uint8
    for item in results:  # Each stroke, decoded as Label Studio's converter does, is its class.
        alpha = decode_rle(item["value"]["rle"]).reshape(height, width, 4)[:, :, 3]
        index = CLASS_NAMES.index(item["value"]["brushlabels"][0])
        np.testing.assert_array_equal(alpha > 0, mask == index)


def test_a_task_holds_one_result_per_class_but_background():
    mask = MASKS["blobs"]
    task = labelstudio.review_task(
        "https://x/a.jpg", mask, CLASS_NAMES, BACKGROUND, "model-1", 0.7, {"mean_confidence": 0.7}
    )
    assert task["data"] == {"image": "https://x/a.jpg", "mean_confidence": 0.7}
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "model-1" and prediction["score"] == 0.7
    results = prediction["result"]
    assert [item["value"]["brushlabels"] for item in results] == [["pet"], ["border"]]
    assert {(item["from_name"], item["to_name"], item["type"]) for item in results} == {
        ("mask", "image", "brushlabels")
    }
    assert all((item["original_width"], item["original_height"]) == (53, 37) for item in results)
    assert len({item["id"] for item in results}) == 2
    empty = labelstudio.review_task("a", MASKS["all background"], CLASS_NAMES, 1, "m", 0.5)
    assert empty["predictions"][0]["result"] == []


def test_tasks_are_the_same_on_every_run():
    def encoded() -> str:
        return json.dumps(
            labelstudio.review_task("gs://b/a.jpg", MASKS["blobs"], CLASS_NAMES, 1, "m", 0.5)
        )

    assert encoded() == encoded()
    other = labelstudio.review_task("gs://b/b.jpg", MASKS["blobs"], CLASS_NAMES, 1, "m", 0.5)
    ids = {item["id"] for item in other["predictions"][0]["result"]}
    assert not ids & {item["id"] for item in json.loads(encoded())["predictions"][0]["result"]}


def test_unpainted_pixels_are_background_and_later_strokes_win():
    pet = np.zeros((20, 30), bool)
    pet[2:12, 3:20] = True
    border = np.zeros((20, 30), bool)
    border[8:16, 10:25] = True
    results = [
        _brush("pet", pet),
        {"id": "k", "type": "keypointlabels", "value": {"x": 1, "y": 2}},
        _brush("border", border),
    ]
    mask = labelstudio.class_map_from_results(results, 30, 20, CLASS_NAMES, BACKGROUND)
    expected = np.full((20, 30), BACKGROUND, np.uint8)
    expected[pet] = 0
    expected[border] = 2
    np.testing.assert_array_equal(mask, expected)
    assert (labelstudio.class_map_from_results([], 30, 20, CLASS_NAMES, 1) == 1).all()


def _without_size(item: dict) -> dict:
    return {key: value for key, value in item.items() if not key.startswith("original_")}


def _bad_results() -> dict[str, tuple[list[dict], str]]:
    painted = np.ones((20, 30), bool)
    return {
        "unknown label": ([_brush("cat", painted)], "'cat'"),
        "another size": ([_brush("pet", painted, original_width=31)], "31x20"),
        "wrong length": ([_brush("pet", np.ones((20, 31), bool), original_width=30)], "620"),
        "wrong length, no size": ([_without_size(_brush("pet", np.ones((20, 31), bool)))], "620"),
        "no labels": ([{**_brush("pet", painted), "value": {"rle": [0], "brushlabels": []}}], "0"),
        "two labels": ([_brush("pet", painted, value={"rle": [0], "brushlabels": ["pet", "border"]})], "2"),
        "no value": ([_brush("pet", painted, value=None)], "has no value"),
        "no rle": ([_brush("pet", painted, value={"brushlabels": ["pet"]})], "RLE"),
        "corrupt rle": ([_brush("pet", painted, value={"rle": [1, 2], "brushlabels": ["pet"]})], "RLE"),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_bad_results()))
def test_bad_results_raise_a_one_line_label_error(case):
    results, fragment = _bad_results()[case]
    with pytest.raises(LabelError) as raised:
        labelstudio.class_map_from_results(results, 30, 20, CLASS_NAMES, BACKGROUND)
    message = str(raised.value)
    assert fragment in message and "\n" not in message, message


def test_a_mask_with_a_class_the_model_lacks_is_refused():
    with pytest.raises(LabelError, match="class 3"):
        labelstudio.prediction_results(np.full((4, 4), 3, np.uint8), CLASS_NAMES, 1, "a")


def test_the_labeling_config_has_one_brush_label_per_class_but_background():
    config = labelstudio.labeling_config(CLASS_NAMES, BACKGROUND)
    view = ElementTree.fromstring(config)
    image = view.find("Image")
    assert image.attrib == {"name": "image", "value": "$image", "zoom": "true"}
    brushes = view.find("BrushLabels")
    assert brushes.attrib == {"name": "mask", "toName": "image"}
    labels = [(label.get("value"), label.get("background")) for label in brushes]
    assert labels == [
        ("pet", "#" + bytes(CLASS_COLOURS[0]).hex()),
        ("border", "#" + bytes(CLASS_COLOURS[2]).hex()),
    ]
    quoted = labelstudio.labeling_config(['a "cat" & <dog>', "background"], 1)
    assert ElementTree.fromstring(quoted).find("BrushLabels")[0].get("value") == 'a "cat" & <dog>'


def test_a_missing_converter_is_one_line_naming_the_extra(monkeypatch):
    # None in sys.modules makes the import fail, as if the package were absent.
    monkeypatch.setitem(sys.modules, "label_studio_converter", None)
    monkeypatch.setitem(sys.modules, "label_studio_converter.brush", None)
    with pytest.raises(labelstudio.ConverterMissingError) as raised:
        labelstudio.prediction_results(MASKS["blobs"], CLASS_NAMES, 1, "a")
    assert "petseg[labels]" in str(raised.value) and "\n" not in str(raised.value)
    assert isinstance(raised.value, LabelError)


IMPORTED = """
import sys
import {module}
print(sorted({{name.split(".")[0] for name in sys.modules}} & {forbidden!r}))
"""


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("petseg.labels.labelstudio", {"label_studio_converter", "pandas"}),
        # Beam, which the review reads OUT with, may import pandas by itself.
        ("petseg.labels.review", {"label_studio_converter"}),
    ],
)
def test_importing_the_modules_does_not_import_the_converter(module, forbidden):
    """The converter (and its pandas) loads only when a task is encoded or decoded."""
    script = IMPORTED.format(module=module, forbidden=forbidden)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
