"""Corrected labels as training data.

COCO files and Label Studio exports written here decode to exactly the class
maps written; bad records are reported and skipped, or refused with
``strict``; and both train a tiny model, beside an Oxford folder or alone.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from label_studio_converter.brush import mask2rle
from PIL import Image
from pycocotools import mask as mask_utils

from petseg.classes import BACKGROUND, BORDER, CLASS_NAMES, PET
from petseg.cli.train import main, parse_args, run
from petseg.imageio import resize_mask
from petseg.training import data
from petseg.training.config import TrainConfig
from petseg.training.data import DataSourceError
from petseg.training.data.labels import read_record
from petseg.training.inputs import load_datasets
from tests import images

SIZE = 32
TINY_FLAGS = [
    "--image-size=32",
    "--alpha=0.35",
    "--encoder-weights=none",
    "--batch-size=4",
    "--steps-per-epoch=2",
    "--epochs=1",
    "--plot-examples=1",
]


def class_map(seed: int, height: int, width: int) -> np.ndarray:
    """Every class: a pet rectangle on background, a border band along its lower edge."""
    rng = np.random.default_rng(seed)
    top, left = rng.integers(2, height // 3), rng.integers(2, width // 3)
    bottom, right = rng.integers(height // 2, height - 5), rng.integers(width // 2, width - 2)
    labels = np.full((height, width), BACKGROUND, np.uint8)
    labels[top:bottom, left:right] = PET
    labels[bottom : bottom + 3, left:right] = BORDER
    return labels


def write_image(path, height: int, width: int) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(images.gradient(width, height)).save(path)
    return str(path)


def compressed_rle(binary: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(binary, dtype=np.uint8))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_document(examples: dict[str, np.ndarray]) -> dict:
    """A COCO file of ``file_name -> class map``: an annotation per foreground class."""
    document = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CLASS_NAMES)],
    }
    for image_id, (file_name, labels) in enumerate(examples.items(), start=1):
        height, width = labels.shape
        document["images"].append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width}
        )
        for index in (PET, BORDER):
            if (labels == index).any():
                document["annotations"].append(
                    {
                        "id": len(document["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": index + 1,
                        "segmentation": compressed_rle(labels == index),
                        "iscrowd": 0,
                    }
                )
    return document


def write_json(path, document) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file)
    return str(path)


def brush_results(labels: np.ndarray, names: dict[int, str] | None = None) -> list[dict]:
    """Label Studio brush results of a class map, one per foreground class it holds."""
    height, width = labels.shape
    results = []
    for index in (PET, BORDER):
        if not (labels == index).any():
            continue
        stroke = np.where(labels == index, 255, 0).astype(np.uint8)
        name = (names or {}).get(index, CLASS_NAMES[index])
        results.append(
            {
                "id": f"r{index}",
                "type": "brushlabels",
                "from_name": "mask",
                "to_name": "image",
                "original_width": width,
                "original_height": height,
                "value": {"format": "rle", "rle": mask2rle(stroke), "brushlabels": [name]},
            }
        )
    return results


def task(task_id: int, image: str, *annotations: list[dict], cancelled: bool = False) -> dict:
    """A task with its annotations' results in order; ``cancelled`` adds a cancelled last one."""
    listed = [
        {"id": i, "result": result, "was_cancelled": False} for i, result in enumerate(annotations)
    ]
    if cancelled:
        listed.append({"id": 99, "result": [], "was_cancelled": True})
    return {"id": task_id, "data": {"image": image}, "annotations": listed}


def write_coco_set(folder, count: int = 3, seed: int = 0) -> str:
    """``count`` images and their COCO file in ``folder``; returns the file."""
    examples = {}
    for index in range(count):
        labels = class_map(seed + index, 40 + 8 * index, 48)
        write_image(folder / f"coco_{index}.png", *labels.shape)
        examples[f"coco_{index}.png"] = labels
    return write_json(folder / "coco.json", coco_document(examples))


def write_labelstudio_set(folder, storage, count: int = 3, seed: int = 100) -> str:
    """``count`` labelled tasks (images in Label Studio's local ``storage``) and one
    not labelled yet; returns the export."""
    tasks = []
    for index in range(count):
        labels = class_map(seed + index, 48, 40 + 8 * index)
        write_image(storage / "pets" / f"ls_{index}.png", *labels.shape)
        image = f"/data/local-files/?d=pets/ls_{index}.png"
        tasks.append(task(index + 1, image, brush_results(labels)))
    tasks.append({"id": count + 1, "data": {"image": "/data/local-files/?d=x.png"}})
    return write_json(folder / "export.json", tasks)


def write_oxford(root, count: int = 6, size: int = 48) -> str:
    """A small Oxford-layout folder of synthetic pets: 4 to train on, the rest to test."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    files = data.write_synthetic_files(
        str(root / "images"), str(root / "annotations" / "trimaps"), count, size
    )
    names = [os.path.splitext(os.path.basename(f.image_path))[0] for f in files]
    (root / "annotations" / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in names[:4]))
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in names[4:]))
    return str(root)


def skipped(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "skipping " in r.getMessage()]


# ---- COCO


def test_a_coco_file_decodes_to_the_class_maps_written(tmp_path):
    examples = {
        "a.png": class_map(1, 40, 48),
        "sub/b.png": class_map(2, 64, 32),
        "plain.png": np.full((32, 36), BACKGROUND, np.uint8),  # no annotation: all background
    }
    for name, labels in examples.items():
        write_image(tmp_path / name, *labels.shape)
    absolute = write_image(tmp_path / "elsewhere" / "c.png", 33, 35)
    examples[absolute] = class_map(3, 33, 35)
    path = write_json(tmp_path / "coco.json", coco_document(examples))

    report = data.read_label_file(path)

    assert (report.kind, report.bad, report.unlabelled) == ("COCO", (), 0)
    assert report.summary() == f"labels {path} (COCO): 4 example(s)"
    assert [r.image_path for r in report.records] == [
        str(tmp_path / "a.png"),
        str(tmp_path / "sub" / "b.png"),
        str(tmp_path / "plain.png"),
        absolute,
    ]
    for record, labels in zip(report.records, examples.values(), strict=True):
        np.testing.assert_array_equal(record.class_map(*labels.shape), labels)
        image, mask = read_record(record, SIZE)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(mask[:, :, 0], resize_mask(labels, SIZE))


def test_coco_polygons_and_plain_rle_decode_as_pycocotools_own_api_does(tmp_path):
    from pycocotools.coco import COCO

    write_image(tmp_path / "a.png", 40, 48)
    border = np.zeros((40, 48), np.uint8)
    border[10:30, 20:25] = 1
    flat = border.flatten(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    document = {
        "images": [{"id": 7, "file_name": "a.png", "height": 40, "width": 48}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentation": [[4, 4, 30, 6, 26, 35, 6, 30]]},
            {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [40, 48], "counts": counts}},
        ],
        "categories": [{"id": 1, "name": "pet"}, {"id": 3, "name": "border"}],
    }  # fmt: skip
    path = write_json(tmp_path / "coco.json", document)
    coco = COCO(path)
    expected = np.full((40, 48), BACKGROUND, np.uint8)
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[7])):
        expected[coco.annToMask(annotation) > 0] = annotation["category_id"] - 1
    # The border, painted after the pet, is all there.
    assert (expected == PET).any() and (expected[border == 1] == BORDER).all()

    (record,) = data.read_label_file(path).records
    np.testing.assert_array_equal(record.class_map(40, 48), expected)


def test_a_coco_image_is_found_at_its_path_when_not_beside_the_file(tmp_path):
    """The job's COCO file names images relative to its input folder; ``path`` is the full one."""
    image = write_image(tmp_path / "input" / "cat.png", 32, 32)
    document = coco_document({"cat.png": class_map(4, 32, 32)})
    document["images"][0]["path"] = image
    path = write_json(tmp_path / "out" / "coco.json", document)

    (record,) = data.read_label_file(path).records

    assert record.image_path == image


def test_bad_coco_records_are_reported_and_skipped_or_refused_with_strict(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    names = ["ok.png", "missing.png", "size.png", "unknown.png", "rle.png", "short.png"]
    names += ["liar.png", "remote"]
    examples = {name: class_map(i, 32, 32) for i, name in enumerate(names)}
    for name in set(names) - {"missing.png", "remote"}:
        write_image(tmp_path / name, 32, 32)
    document = coco_document(examples)
    first = {}  # image id -> its first annotation
    for annotation in document["annotations"]:
        first.setdefault(annotation["image_id"], annotation)
    first[3]["segmentation"] = compressed_rle(np.ones((10, 12), bool))
    document["categories"].append({"id": 9, "name": "cat"})
    first[4]["category_id"] = 9
    first[5]["segmentation"]["counts"] = "zzzz"
    # Runs that stop short: pycocotools would leave the rest of the mask uninitialised.
    first[6]["segmentation"]["counts"] = [10, 5]
    # Declared 40 x 40 and labelled so, but the image on disk is 32 x 32.
    document["images"][6].update(height=40, width=40)
    first[7]["segmentation"] = compressed_rle(class_map(9, 40, 40) == PET)
    document["annotations"] = [
        a for a in document["annotations"] if a["image_id"] != 7 or a is first[7]
    ]
    document["images"][7] = {"id": 8, "path": "gs://bucket/cat.jpg", "height": 32, "width": 32}
    path = write_json(tmp_path / "coco.json", document)

    (report,) = data.checked_labels([path])

    assert report.summary() == (
        f"labels {path} (COCO): 2 example(s); 6 skipped: 4 bad label, 1 missing image, "
        "1 remote image"
    )
    assert report.summary() in [r.getMessage() for r in caplog.records]
    assert skipped(caplog) == [
        f"labels {path}: skipping image {i} ({name}): {reason}"
        for i, name, reason in [
            (2, "missing.png", f"image {tmp_path / 'missing.png'} does not exist"),
            (3, "size.png", "an RLE is 12x10, but the image is 32x32"),
            (4, "unknown.png", "annotation 7 is labelled 'cat', which is not one of the "
             "model's classes ['pet', 'background', 'border']"),
            (5, "rle.png", "a compressed RLE holds 'z', not an RLE character"),
            (6, "short.png", "an RLE's runs cover 15 pixels, not the image's 1024"),
            (8, "gs://bucket/cat.jpg", "image gs://bucket/cat.jpg is not a local file; training "
             "reads local images: copy them beside the COCO file, where their file_name says"),
        ]
    ]  # fmt: skip

    # The liar passes the file's own word, and is caught against its decoded image.
    caplog.clear()
    dataset = data.labels_dataset(report.records, SIZE)
    assert len(list(dataset.as_numpy_iterator())) == 1
    assert skipped(caplog) == [
        f"skipping image 7 (liar.png) ({tmp_path / 'liar.png'}): "
        "the image is 32x32, but the file says 40x40"
    ]

    with pytest.raises(DataSourceError, match=r"6 bad record\(s\), first image 2 \(missing.png\)"):
        data.checked_labels([path], strict=True)
    with pytest.raises(DataSourceError, match=r"1 bad labelled image\(s\), first image 7"):
        data.labels_dataset(report.records, SIZE, strict=True)


# ---- Label Studio


def test_a_labelstudio_export_decodes_to_the_class_maps_written(tmp_path):
    written = [class_map(seed, 40, 48) for seed in range(5)]
    relative = write_image(tmp_path / "a.png", 40, 48)
    absolute = write_image(tmp_path / "elsewhere" / "b.png", 40, 48)
    stored = write_image(tmp_path / "storage" / "pets" / "c d.png", 40, 48)
    tasks = [
        # The latest annotation that was not cancelled counts.
        task(1, "a.png", brush_results(written[4]), brush_results(written[0]), cancelled=True),
        task(2, absolute, brush_results(written[1])),
        task(3, "file://" + absolute.replace(" ", "%20"), brush_results(written[2])),
        task(4, "/data/local-files/?d=pets%2Fc%20d.png", brush_results(written[3])),
        task(5, "a.png", []),  # labelled: nothing painted, all background
        task(6, "a.png"),  # not labelled yet
        {"id": 7, "data": {"image": "a.png"}, "predictions": [{"result": []}]},
        {"id": 8, "data": {"image": "gone.png"},
         "annotations": [{"result": [], "was_cancelled": True}]},
    ]  # fmt: skip
    path = write_json(tmp_path / "export.json", tasks)

    report = data.read_label_file(path, image_root=str(tmp_path / "storage"))

    assert (report.kind, report.bad, report.unlabelled) == ("Label Studio", (), 3)
    assert report.summary().endswith(": 5 example(s); 3 task(s) not labelled yet")
    assert [r.image_path for r in report.records] == [
        relative,
        absolute,
        absolute,
        stored,
        relative,
    ]
    expected = [*written[:4], np.full((40, 48), BACKGROUND, np.uint8)]
    for record, labels in zip(report.records, expected, strict=True):
        np.testing.assert_array_equal(record.class_map(40, 48), labels)
        _, mask = read_record(record, SIZE)
        np.testing.assert_array_equal(mask[:, :, 0], resize_mask(labels, SIZE))


def test_labelstudio_local_files_default_to_the_exports_folder(tmp_path):
    image = write_image(tmp_path / "pets" / "a.png", 40, 48)
    path = write_json(
        tmp_path / "export.json",
        [
            task(
                1,
                "http://localhost:8080/data/local-files/?d=pets/a.png",
                brush_results(class_map(0, 40, 48)),
            )
        ],
    )
    (record,) = data.read_label_file(path).records
    assert record.image_path == image


def test_bad_labelstudio_records_are_reported_and_skipped_or_refused_with_strict(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    labels = class_map(0, 32, 32)
    for name in ("ok.png", "unknown.png", "size.png", "rle.png", "liar.png"):
        write_image(tmp_path / name, 32, 32)
    wrong_size = brush_results(class_map(1, 32, 20))
    for result in wrong_size:
        result.update(original_width=32)  # says 32 x 32, holds 20 x 32
    broken = brush_results(labels)
    broken[0]["value"]["rle"] = [3, 1, 4, 1, 5]
    tasks = [
        task(1, "ok.png", brush_results(labels)),
        task(2, "missing.png", brush_results(labels)),
        task(3, "https://example.com/cat.jpg", brush_results(labels)),
        task(4, "unknown.png", brush_results(labels, {PET: "cat"})),
        task(5, "size.png", wrong_size),
        task(6, "rle.png", broken),
        task(7, "liar.png", brush_results(class_map(2, 40, 40))),
    ]
    path = write_json(tmp_path / "export.json", tasks)

    (report,) = data.checked_labels([path])

    assert report.summary() == (
        f"labels {path} (Label Studio): 2 example(s); 5 skipped: 3 bad label, "
        "1 missing image, 1 remote image"
    )
    assert report.summary() in [r.getMessage() for r in caplog.records]
    reasons = {m.split(": skipping ")[1].split(":")[0]: m for m in skipped(caplog)}
    assert list(reasons) == ["task 2", "task 3", "task 4", "task 5", "task 6"]
    assert f"image {tmp_path / 'missing.png'} does not exist" in reasons["task 2"]
    assert "image https://example.com/cat.jpg is not a local file" in reasons["task 3"]
    # The rest in class_map_from_results's words: the label, and the sizes that disagree.
    assert "'cat'" in reasons["task 4"]
    assert "640" in reasons["task 5"] and "32x32" in reasons["task 5"]
    assert "brush result r0" in reasons["task 6"]

    caplog.clear()
    assert len(list(data.labels_dataset(report.records, SIZE).as_numpy_iterator())) == 1
    (message,) = skipped(caplog)
    assert message.startswith("skipping task 7 (") and "40x40" in message

    with pytest.raises(
        DataSourceError, match=r"5 bad record\(s\), first task 2: image .* does not exist"
    ):
        data.checked_labels([path], strict=True)
    with pytest.raises(DataSourceError, match=r"1 bad labelled image\(s\), first task 7"):
        data.labels_dataset(report.records, SIZE, strict=True)


def test_malformed_records_in_either_format_are_skipped_not_a_crash(tmp_path, caplog):
    write_image(tmp_path / "a.png", 32, 32)
    labels = class_map(0, 32, 32)
    coco = coco_document({"a.png": labels, "b.png": labels, "c.png": labels, "d.png": labels})
    coco["annotations"][2]["segmentation"] = None  # b.png: a box only
    coco["annotations"][4]["segmentation"] = [{"size": [32, 32], "counts": [10, 5]}]
    coco["images"][3].update(height="32")
    coco["images"].append("not an image")
    coco["annotations"].append({"id": 70, "image_id": 99, "category_id": 1, "segmentation": []})
    for image in coco["images"][1:3]:
        image["file_name"] = "a.png"
    coco_path = write_json(tmp_path / "coco.json", coco)
    broken_value = brush_results(labels)
    broken_value[0]["value"] = ["not", "a", "value"]
    tasks = [
        task(1, "a.png", brush_results(labels)),
        {"id": 2, "data": "a.png", "annotations": [{"result": []}]},
        task(3, "a.png", broken_value),
        task(4, "a.png", ["not a result"]),
        {"id": 5, "data": {"image": "a.png"}, "annotations": {"result": []}},
        "not a task",
    ]
    export = write_json(tmp_path / "export.json", tasks)

    coco_report, export_report = data.checked_labels([coco_path, export])

    assert len(coco_report.records) == len(export_report.records) == 1
    assert coco_report.summary().endswith(
        "1 example(s); 5 skipped: 2 bad label, 3 malformed record"
    )
    assert export_report.summary().endswith(
        "1 example(s); 5 skipped: 1 bad label, 4 malformed record"
    )
    reasons = "\n".join(skipped(caplog))
    assert "a segmentation is neither polygons nor RLE: None" in reasons
    assert "no positive height and width" in reasons
    assert "1 annotation(s) of an image that images does not list" in reasons
    assert "skipping task 3: brush result r0" in reasons
    assert "skipping task #6: not a task object: 'not a task'" in reasons


# ---- Files that are not label files, and the flags


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (None, "cannot read labels file .*: No such file or directory"),
        (b"{not json", "is not JSON"),
        (b"\xff\xfe\x00", "is not JSON"),
        (b"42", "neither a COCO file .* nor a Label Studio JSON export"),
        (b'{"images": []}', "neither a COCO file"),
        (b'[{"image": "a.png", "tag": []}]', "not of Label Studio tasks"),
        (b'{"images": {}, "annotations": [], "categories": []}', "must be lists"),
        (b'{"images": [], "annotations": [], "categories": []}', r"0 example\(s\): nothing to train on"),
        (b'[{"data": {"image": "a.png"}}]', r"1 task\(s\) not labelled yet: nothing to train on"),
    ],
)  # fmt: skip
def test_a_file_that_gives_nothing_to_train_on_is_one_clear_error(tmp_path, contents, message):
    path = tmp_path / "labels.json"
    if contents is not None:
        path.write_bytes(contents)
    with pytest.raises(DataSourceError, match=message):
        data.checked_labels([str(path)])


def test_a_folder_is_not_a_labels_file(tmp_path):
    with pytest.raises(DataSourceError, match="cannot read labels file .*: Is a directory"):
        data.read_label_file(str(tmp_path))


def test_the_labels_flags_repeat_and_choose_the_source(tmp_path):
    config, _ = parse_args(["--labels", "a.json", "--labels", "b.json", "--data-dir", "d"])
    assert config.labels == ("a.json", "b.json") and config.source == "oxford_folder"
    config, _ = parse_args(["--labels", "a.json", "--labels-image-root", "media"])
    assert (config.source, config.labels_image_root) == ("labels", "media")
    default, _ = parse_args([])
    assert default.labels is None and default.source == "tfds"
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict()))["labels"] == ["a.json"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--labels-image-root", "media"], "--labels-image-root applies to Label Studio exports"),
        (["--dataset", "synthetic", "--labels", "a.json"], "--dataset synthetic reads no files"),
        (["--labels", " "], "--labels needs a file"),
        (["--labels"], "expected one argument"),
    ],
)
def test_bad_labels_flags_exit_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


@pytest.mark.parametrize(("contents", "message"), [(None, "cannot read"), (b"[", "is not JSON")])
def test_train_refuses_an_unusable_labels_file_in_one_line(tmp_path, capsys, contents, message):
    path = tmp_path / "labels.json"
    if contents is not None:
        path.write_bytes(contents)
    argv = ["--labels", str(path), *TINY_FLAGS, "--workdir", str(tmp_path / "run")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    # The log lines of the run before it, then the one line, no traceback.
    assert "Traceback" not in error
    last = error.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and message in last


# ---- Mixed with the original set, and alone


def test_labels_join_the_training_split_only(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    oxford = write_oxford(tmp_path / "oxford")
    coco = write_coco_set(tmp_path / "coco")
    export = write_labelstudio_set(tmp_path / "ls", tmp_path / "storage")
    config = TrainConfig(
        data_dir=oxford, labels=(coco, export), labels_image_root=str(tmp_path / "storage"),
        image_size=SIZE,
    )  # fmt: skip

    datasets = load_datasets(config)

    assert (datasets.num_train, datasets.num_eval, datasets.eval_split) == (10, 2, "test")
    assert len(datasets.eval_files) == 2
    assert len(list(datasets.train.as_numpy_iterator())) == 10
    assert datasets.description == (
        f"oxford folder {oxford} trainval/test + labels {coco} (3), {export} (3) (training only)"
    )
    messages = [r.getMessage() for r in caplog.records]
    assert f"labels {coco} (COCO): 3 example(s)" in messages
    assert f"labels {export} (Label Studio): 3 example(s); 1 task(s) not labelled yet" in messages


@pytest.mark.slow
def test_coco_and_labelstudio_labels_train_a_tiny_model_beside_an_oxford_folder(tmp_path, caplog):
    from petseg.serving.export import read_model_info

    caplog.set_level(logging.INFO)
    oxford = write_oxford(tmp_path / "oxford")
    coco = write_coco_set(tmp_path / "coco")
    export = write_labelstudio_set(tmp_path / "ls", tmp_path / "storage")
    argv = [
        *TINY_FLAGS,
        *("--data-dir", oxford, "--labels", coco, "--labels", export),
        *("--labels-image-root", str(tmp_path / "storage"), "--workdir", str(tmp_path / "run")),
    ]

    result = run(argv)

    document = read_model_info(result.export_dir).metadata
    assert document["config"]["labels"] == [coco, export]
    assert f"labels {coco} (3), {export} (3) (training only)" in document["training"]["data"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(": 10 training / 2 evaluation examples;" in m for m in messages)
    assert f"labels {coco} (COCO): 3 example(s)" in messages
    # Scored on the Oxford test split at its own resolution: 2 images of 48 x 48.
    assert result.metrics["pixels"] == 2 * 48 * 48


@pytest.mark.slow
def test_labels_alone_are_split_and_train_a_tiny_model(tmp_path, caplog):
    from petseg.serving.export import read_model_info

    caplog.set_level(logging.INFO)
    coco = write_coco_set(tmp_path / "coco")
    export = write_labelstudio_set(tmp_path / "ls", tmp_path / "storage")
    argv = [
        *TINY_FLAGS,
        *("--labels", coco, "--labels", export, "--val-fraction", "0.34", "--strict"),
        *("--labels-image-root", str(tmp_path / "storage"), "--workdir", str(tmp_path / "run")),
    ]

    result = run(argv)

    document = read_model_info(result.export_dir).metadata
    assert document["training"]["data"] == f"labels {coco} (3), {export} (3); 2 held out"
    messages = [r.getMessage() for r in caplog.records]
    assert any(": 4 training / 2 evaluation examples;" in m for m in messages)
    # No mask files to score at full size: the held-out labels are scored at the model's.
    assert result.metrics["pixels"] == 2 * SIZE * SIZE
