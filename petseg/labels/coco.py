"""COCO records of class maps, and the COCO file assembled from them.

The format is COCO's object-detection annotations (the 2017 release's
``instances_*.json``): one annotation per image and foreground class, whose
``segmentation`` is a compressed RLE ``{"size": [height, width], "counts":
"..."}`` encoded by ``pycocotools``, with ``area``, ``bbox`` ``[x, y, width,
height]``, ``iscrowd`` 0 and a ``score``: the mean probability the model gave
that class over its pixels. ``pycocotools.coco.COCO`` loads the file as
ground truth, and its annotations list is a valid results file for
``COCO.loadRes``.

Category ids are class index + 1 (:data:`~petseg.labels.COCO_ID_OFFSET`), so
an id means the same class whichever classes a file holds.

Images carry petseg's fields beside COCO's: ``path``, the image's full
location (a local path or a bucket URL; ``file_name`` is relative to the
input folder it was found in), and ``mask_path``, its PNG mask below OUT.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from petseg.labels import COCO_ID_OFFSET

DECIMALS = 6
# Images or annotations encoded at once while the file is written.
CHUNK_ITEMS = 1_000


def categories(class_names: Sequence[str], foreground: Sequence[int]) -> list[dict[str, Any]]:
    """The ``categories`` of a file holding the classes ``foreground`` (indices)."""
    return [
        {"id": index + COCO_ID_OFFSET, "name": class_names[index], "supercategory": "pet"}
        for index in sorted(foreground)
    ]


def class_annotations(
    mask: np.ndarray, foreground: Sequence[int], scores: Sequence[float]
) -> list[dict[str, Any]]:
    """The annotations of one class map, one per foreground class it holds.

    Args:
      mask: ``uint8 [H, W]`` class indices.
      foreground: the class indices to annotate, in order.
      scores: a score per class index (the class's mean probability over its pixels).

    Returns:
      ``[{"category_id", "segmentation", "area", "bbox", "iscrowd", "score"}]``
      without ``id`` and ``image_id``, which the file assigns.
    """
    from pycocotools import mask as mask_utils

    annotations = []
    for index in foreground:
        binary = np.asfortranarray(mask == index, dtype=np.uint8)
        rle = mask_utils.encode(binary)
        area = int(mask_utils.area(rle))
        if area == 0:
            continue
        annotations.append(
            {
                "category_id": index + COCO_ID_OFFSET,
                "segmentation": {
                    "size": [int(size) for size in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                },
                "area": area,
                "bbox": [int(value) for value in mask_utils.toBbox(rle)],
                "iscrowd": 0,
                "score": round(float(scores[index]), DECIMALS),
            }
        )
    return annotations


def image_row(image: dict[str, Any], annotations: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``(sort key, JSON line)`` of one image and its annotations, as the shards hold them.

    Args:
      image: the image's fields (``file_name``, ``width``, ``height``, ``path``,
        ``mask_path``), without ``id``.
      annotations: from :func:`class_annotations`.
    """
    line = {"image": image, "annotations": list(annotations)}
    return image["path"], json.dumps(line, sort_keys=True, separators=(",", ":"))


def class_scores(mask: np.ndarray, confidence: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Each class's mean confidence over the pixels given that class (0 where it has none)."""
    labels = mask.ravel()
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.bincount(labels, weights=confidence.ravel(), minlength=num_classes)
    return tuple(
        round(float(sums[index] / counts[index]), DECIMALS) if counts[index] else 0.0
        for index in range(num_classes)
    )


def document_chunks(
    lines: Callable[[], Iterable[str]],
    info: dict[str, Any],
    cats: list[dict[str, Any]],
    tally: dict[str, int] | None = None,
) -> Iterator[bytes]:
    """The COCO file's bytes, a chunk at a time, from the shards' lines.

    Reads the lines twice (images, then annotations), so no more than a chunk
    of either is held. Ids count from 1 in the lines' order, so the same
    lines give the same bytes.

    Args:
      lines: returns the shards' JSON lines in order, each time it is called.
      info: the file's ``info``.
      cats: its ``categories``.
      tally: if given, its ``images`` and ``annotations`` are set to how many
        the file holds once the last chunk is out.
    """
    tally = {} if tally is None else tally
    head = {"info": info, "licenses": [], "categories": cats}
    yield _dumps(head)[:-1].encode("utf-8") + b',"images":['
    yield from _joined(_numbered_images(lines(), tally))
    yield b'],"annotations":['
    yield from _joined(_numbered_annotations(lines(), tally))
    yield b"]}\n"


def _numbered_images(lines: Iterable[str], tally: dict[str, int]) -> Iterator[dict[str, Any]]:
    tally["images"] = 0
    for line in lines:
        tally["images"] += 1
        yield {"id": tally["images"], **json.loads(line)["image"]}


def _numbered_annotations(lines: Iterable[str], tally: dict[str, int]) -> Iterator[dict[str, Any]]:
    tally["annotations"] = 0
    for image_id, line in enumerate(lines, start=1):
        for annotation in json.loads(line)["annotations"]:
            tally["annotations"] += 1
            yield {"id": tally["annotations"], "image_id": image_id, **annotation}


def _joined(items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    iterator = iter(items)
    first = True
    while True:
        chunk = [item for _, item in zip(range(CHUNK_ITEMS), iterator, strict=False)]
        if not chunk:
            return
        text = ",".join(_dumps(item) for item in chunk)
        yield (text if first else "," + text).encode("utf-8")
        first = False


def _dumps(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"))
