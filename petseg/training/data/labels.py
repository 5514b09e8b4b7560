"""Corrected labels as a training source: a COCO file or a Label Studio export.

Either file sits next to its images and becomes one :class:`CocoRecord` or
:class:`LabelStudioRecord` per labelled image, whose :meth:`class_map` paints
the labels under the class contract (:data:`petseg.classes.CLASS_NAMES`;
unlabelled pixels are background):

- COCO: an object with ``images``, ``annotations`` and ``categories``.
  Categories become classes by name; each image's annotations (polygons,
  RLE or compressed RLE, decoded by ``pycocotools``) are painted in file
  order, later over earlier. ``file_name`` is found relative to the file's
  folder, or else at the image's ``path`` (which the job's ``--coco`` writes).
- Label Studio: a list of tasks, each with ``data.image`` and
  ``annotations``; the latest annotation that was not cancelled is decoded
  by :func:`petseg.labels.labelstudio.class_map_from_results`. Tasks nobody
  has labelled yet are counted, not refused.

A record that cannot be used (its image missing or remote, a label that is
no class, an RLE that does not decode or whose size is not its image's) is
logged and skipped, with one count line per file; with ``strict`` it is
refused before training starts, as the folder sources do.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from petseg.classes import BACKGROUND, CLASS_NAMES
from petseg.imageio import ImageDecodeError, decode_resized, resize_mask
from petseg.labels import IMAGE_NAME, LabelError
from petseg.training.data.files import DataSourceError, read_regular_file

logger = logging.getLogger(__name__)

# Label Studio serves files of its local storage at this path, the file's path in ``d``.
LOCAL_FILES_PATH = "/data/local-files"
COCO_KEYS = ("images", "annotations", "categories")
# What a skipped record is counted as in its file's summary; its message says more.
MISSING_IMAGE, REMOTE_IMAGE, BAD_LABEL, MALFORMED = (
    "missing image",
    "remote image",
    "bad label",
    "malformed record",
)


class _BadRecord(Exception):
    """A record to skip: ``kind`` counts it in the file's summary, the message says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CocoRecord:
    """One image of a COCO file and its annotations.

    Attributes:
      image_path: the image on disk.
      name: the record as the file names it, for messages.
      height: the image's height as the file declares it.
      width: the image's width as the file declares it.
      segments: ``(class index, segmentation)`` per annotation, in file order.
    """

    image_path: str
    name: str
    height: int
    width: int
    segments: tuple[tuple[int, Any], ...] = field(repr=False)

    def class_map(self, height: int, width: int) -> np.ndarray:
        """The annotations painted on background, ``uint8 [height, width]``.

        Raises:
          LabelError: the image is not the size the file declares, an RLE's
            size is not the image's, or a segmentation does not decode.
        """
        if (height, width) != (self.height, self.width):
            raise LabelError(
                f"the image is {width}x{height}, but the file says {self.width}x{self.height}"
            )
        class_map = np.full((height, width), BACKGROUND, np.uint8)
        for class_index, segmentation in self.segments:
            class_map[_decode_segmentation(segmentation, height, width) > 0] = class_index
        return class_map


@dataclass(frozen=True)
class LabelStudioRecord:
    """One labelled task of a Label Studio export.

    Attributes:
      image_path: the image on disk.
      name: the task as the export names it, for messages.
      results: the ``result`` items of the task's latest annotation.
    """

    image_path: str
    name: str
    results: tuple[Mapping[str, Any], ...] = field(repr=False)

    def class_map(self, height: int, width: int) -> np.ndarray:
        """The brush labels painted on background, ``uint8 [height, width]``.

        Raises:
          LabelError: as :func:`petseg.labels.labelstudio.class_map_from_results`.
        """
        from petseg.labels.labelstudio import class_map_from_results

        try:
            return class_map_from_results(self.results, width, height, CLASS_NAMES, BACKGROUND)
        except LabelError:
            raise
        except (AttributeError, TypeError, KeyError, ValueError) as error:
            # An export edited by hand may hold items of another shape than Label Studio's.
            raise LabelError(f"a brush result is malformed ({error})") from None

    def declared_size(self) -> tuple[int, int] | None:
        """``(height, width)`` that the first brush result was drawn on, if any says."""
        for item in self.results:
            size = item.get("original_height"), item.get("original_width")
            if all(isinstance(side, int) and side > 0 for side in size):
                return size
        return None


LabelRecord = CocoRecord | LabelStudioRecord


@dataclass(frozen=True)
class LabelsReport:
    """What one label file gave: its usable records and what was left out.

    Attributes:
      path: the label file.
      kind: ``COCO`` or ``Label Studio``.
      records: the usable records, in file order.
      bad: ``(kind, record, reason)`` of each record skipped; ``kind`` is one of
        :data:`MISSING_IMAGE`, :data:`REMOTE_IMAGE`, :data:`BAD_LABEL`, :data:`MALFORMED`.
      unlabelled: Label Studio tasks nobody has labelled yet.
    """

    path: str
    kind: str
    records: tuple[LabelRecord, ...]
    bad: tuple[tuple[str, str, str], ...] = ()
    unlabelled: int = 0

    def summary(self) -> str:
        """``labels FILE (COCO): 12 example(s); 2 skipped: 1 bad label, 1 missing image``."""
        text = f"labels {self.path} ({self.kind}): {len(self.records)} example(s)"
        if self.bad:
            kinds = collections.Counter(kind for kind, _, _ in self.bad)
            listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            text += f"; {len(self.bad)} skipped: {listed}"
        if self.unlabelled:
            text += f"; {self.unlabelled} task(s) not labelled yet"
        return text


def _compressed_counts(text: str) -> list[int]:
    """The runs of a compressed RLE string, read as pycocotools writes them
    (``rleToString``: 5 bits a character from ``0``, a sign bit, runs after the
    second stored as the difference from the run two before).

    Raises:
      LabelError: a character outside the encoding, or a number cut short.
    """
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                raise LabelError("a compressed RLE ends inside a number")
            chunk = ord(text[position]) - 48
            if not 0 <= chunk < 64:
                raise LabelError(f"a compressed RLE holds {text[position]!r}, not an RLE character")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position, shift = position + 1, shift + 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def _checked_rle(segmentation: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """A COCO RLE, checked to cover its image exactly, as pycocotools decodes it.

    pycocotools leaves the pixels after runs that stop short uninitialised
    (garbage labels), so the runs are counted here first.

    Raises:
      LabelError: an RLE of another size, or runs that do not cover the image.
    """
    size = segmentation.get("size")
    if not isinstance(size, list) or size != [height, width]:
        shown = f"{size[1]}x{size[0]}" if isinstance(size, list) and len(size) == 2 else size
        raise LabelError(f"an RLE is {shown}, but the image is {width}x{height}")
    counts = segmentation.get("counts")
    runs = _compressed_counts(counts) if isinstance(counts, str) else counts
    if not isinstance(runs, list) or not all(isinstance(run, int) and run >= 0 for run in runs):
        raise LabelError("an RLE's counts are not a string or a list of counts")
    if sum(runs) != height * width:
        raise LabelError(
            f"an RLE's runs cover {sum(runs)} pixels, not the image's {height * width}"
        )
    return {"size": [height, width], "counts": counts}


def _decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE, compressed RLE) as ``uint8 [height, width]``.

    Raises:
      LabelError: an RLE of another size, or a segmentation that does not decode.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, Mapping):
        rle = _checked_rle(segmentation, height, width)
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        return mask_utils.decode(rle)
    if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
        raise LabelError(f"a segmentation is neither polygons nor RLE: {segmentation!r:.40}")
    try:
        return mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        )
    except (ValueError, TypeError, IndexError) as error:
        raise LabelError(f"polygons that do not decode ({error})") from None


def _key(value: Any) -> Any:
    """An id as a dict key: a malformed one (a list, say) as its JSON text."""
    return value if isinstance(value, int | float | str | None) else json.dumps(value)


def _local_image(path: str, folder: str) -> str:
    """``path`` as given when absolute, else relative to ``folder``."""
    return os.path.normpath(os.path.join(folder, os.path.expanduser(path)))


def _existing(path: str) -> str:
    # lexists, not isfile: a broken link or a FIFO stays, so reading it says what is wrong.
    if not os.path.lexists(path):
        raise _BadRecord(MISSING_IMAGE, f"image {path} does not exist")
    return path


def _is_remote(reference: str) -> bool:
    # A scheme of one letter is a Windows drive ("C:\\..."), not a URL.
    scheme = urllib.parse.urlparse(reference).scheme
    return len(scheme) > 1 and scheme != "file"


def _check_labels(record: LabelRecord, size: tuple[int, int] | None) -> None:
    """Decodes a record's labels once at the size its file declares, so that a bad
    label is counted when the file is read rather than met while training.

    Raises:
      _BadRecord: an unknown label, an RLE of another size, or one that does not decode.
    """
    if size is None:
        return
    try:
        record.class_map(*size)
    except LabelError as error:
        raise _BadRecord(BAD_LABEL, str(error)) from None


def _coco_image_path(image: Mapping[str, Any], folder: str) -> str:
    """The image of a COCO ``images`` entry: ``file_name`` beside the file, else ``path``."""
    references = [image.get(key) for key in ("file_name", "path")]
    references = [reference for reference in references if isinstance(reference, str) and reference]
    candidates = [_local_image(ref, folder) for ref in references if not _is_remote(ref)]
    for candidate in candidates:
        if os.path.lexists(candidate):
            return candidate
    remote = [reference for reference in references if _is_remote(reference)]
    if remote:
        raise _BadRecord(
            REMOTE_IMAGE,
            f"image {remote[0]} is not a local file; training reads local images: copy them "
            "beside the COCO file, where their file_name says",
        )
    if not candidates:
        raise _BadRecord(MALFORMED, "no file_name")
    raise _BadRecord(MISSING_IMAGE, f"image {' or '.join(candidates)} does not exist")


def _coco_segments(
    annotations: Sequence[Mapping[str, Any]], categories: Mapping[Any, str]
) -> tuple[tuple[int, Any], ...]:
    segments = []
    for annotation in annotations:
        category_id = _key(annotation.get("category_id"))
        if category_id not in categories:
            raise _BadRecord(
                BAD_LABEL,
                f"annotation {annotation.get('id', '?')} has category id {category_id!r}, "
                "which the file's categories do not list",
            )
        if categories[category_id] not in CLASS_NAMES:
            raise _BadRecord(
                BAD_LABEL,
                f"annotation {annotation.get('id', '?')} is labelled "
                f"{categories[category_id]!r}, which is not one of the model's classes "
                f"{list(CLASS_NAMES)}",
            )
        segments.append(
            (CLASS_NAMES.index(categories[category_id]), annotation.get("segmentation"))
        )
    return tuple(segments)


def _coco_record(
    image: Mapping[str, Any],
    annotations: Sequence[Mapping[str, Any]],
    categories: Mapping[Any, str],
    folder: str,
    name: str,
) -> CocoRecord:
    """One ``images`` entry and its annotations as a record, its labels checked.

    Raises:
      _BadRecord: the entry cannot be trained on; the message says why.
    """
    height, width = image.get("height"), image.get("width")
    if not all(isinstance(side, int) and side > 0 for side in (height, width)):
        raise _BadRecord(MALFORMED, f"no positive height and width ({width!r}x{height!r})")
    segments = _coco_segments(annotations, categories)
    record = CocoRecord(_coco_image_path(image, folder), name, height, width, segments)
    _check_labels(record, (height, width))
    return record


def coco_records(document: Mapping[str, Any], path: str) -> LabelsReport:
    """The records of a COCO file.

    Args:
      document: the file's contents, an object with ``images``, ``annotations``
        and ``categories``.
      path: the file; a relative ``file_name`` is relative to its folder.

    Raises:
      DataSourceError: the three lists are not lists.
    """
    if not all(isinstance(document[key], list) for key in COCO_KEYS):
        raise DataSourceError(f"labels file {path}: {', '.join(COCO_KEYS)} must be lists")
    categories = {
        _key(category.get("id")): str(category.get("name"))
        for category in document["categories"]
        if isinstance(category, Mapping)
    }
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for annotation in document["annotations"]:
        if isinstance(annotation, Mapping):
            by_image.setdefault(_key(annotation.get("image_id")), []).append(annotation)
    folder = os.path.dirname(os.path.abspath(path))
    records, bad, seen = [], [], set()
    for image in document["images"]:
        image = image if isinstance(image, Mapping) else {}
        name = f"image {image.get('id')!r} ({image.get('file_name') or image.get('path')})"
        try:
            if _key(image.get("id")) in seen:
                raise _BadRecord(MALFORMED, "another images entry has the same id")
            seen.add(_key(image.get("id")))
            annotations = by_image.pop(_key(image.get("id")), [])
            records.append(_coco_record(image, annotations, categories, folder, name))
        except _BadRecord as error:
            bad.append((error.kind, name, str(error)))
    for image_id, orphans in by_image.items():
        reason = f"{len(orphans)} annotation(s) of an image that images does not list"
        bad.append((MALFORMED, f"image {image_id!r}", reason))
    return LabelsReport(path, "COCO", tuple(records), tuple(bad))


def _task_image(reference: str, folder: str, image_root: str | None) -> str:
    """The file a task's ``data.image`` names.

    Label Studio's local storage serves ``/data/local-files/?d=PATH``, PATH
    relative to its document root (``image_root``); ``file://`` URLs and plain
    paths (absolute, or relative to the export's folder) are files too.

    Raises:
      _BadRecord: a remote URL, or no such file.
    """
    parsed = urllib.parse.urlparse(reference)
    if parsed.path.rstrip("/") == LOCAL_FILES_PATH:
        relative = urllib.parse.parse_qs(parsed.query).get("d")
        if not relative:
            raise _BadRecord(MALFORMED, f"image {reference} names no file (?d=PATH)")
        return _existing(_local_image(relative[0], image_root or folder))
    if parsed.scheme == "file":
        return _existing(urllib.parse.unquote(parsed.path))
    if _is_remote(reference):
        raise _BadRecord(
            REMOTE_IMAGE,
            f"image {reference} is not a local file; training reads local images: "
            "download them, or serve them from Label Studio's local storage "
            "(/data/local-files/?d=PATH) and give its folder as --labels-image-root",
        )
    return _existing(_local_image(reference, folder))


def _latest_annotation(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The task's last annotation that was not cancelled (skipped), or ``None``."""
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise _BadRecord(MALFORMED, "annotations is not a list")
    kept = [a for a in annotations if isinstance(a, Mapping) and not a.get("was_cancelled")]
    return kept[-1] if kept else None


def _labelstudio_record(
    task: Any, name: str, folder: str, image_root: str | None
) -> LabelStudioRecord | None:
    """One task as a record, its labels checked; ``None`` if nobody has labelled it.

    Raises:
      _BadRecord: the task cannot be trained on; the message says why.
    """
    if not isinstance(task, Mapping):
        raise _BadRecord(MALFORMED, f"not a task object: {task!r:.40}")
    annotation = _latest_annotation(task)
    if annotation is None:
        return None
    task_data = task.get("data")
    reference = task_data.get(IMAGE_NAME) if isinstance(task_data, Mapping) else None
    if not isinstance(reference, str) or not reference:
        raise _BadRecord(MALFORMED, f"no data.{IMAGE_NAME}")
    results = annotation.get("result") or []
    if not isinstance(results, list) or not all(isinstance(item, Mapping) for item in results):
        raise _BadRecord(MALFORMED, "its annotation's result is not a list of objects")
    image_path = _task_image(reference, folder, image_root)
    record = LabelStudioRecord(image_path, name, tuple(results))
    _check_labels(record, record.declared_size())
    return record


def labelstudio_records(
    tasks: Sequence[Any], path: str, image_root: str | None = None
) -> LabelsReport:
    """The records of a Label Studio JSON export.

    Args:
      tasks: the export's contents, a list of tasks.
      path: the export; a relative image path is relative to its folder.
      image_root: Label Studio's local-storage folder (default: the export's folder).

    Raises:
      DataSourceError: the list holds no task.
    """
    if tasks and not any(isinstance(task, Mapping) and "data" in task for task in tasks):
        raise DataSourceError(
            f"labels file {path} is a list, but not of Label Studio tasks (each with data "
            "and annotations): export the project as JSON"
        )
    folder = os.path.dirname(os.path.abspath(path))
    records, bad, unlabelled = [], [], 0
    for position, task in enumerate(tasks):
        task_id = task.get("id") if isinstance(task, Mapping) else None
        name = f"task {task_id}" if task_id is not None else f"task #{position + 1}"
        try:
            record = _labelstudio_record(task, name, folder, image_root)
        except _BadRecord as error:
            bad.append((error.kind, name, str(error)))
            continue
        if record is None:
            unlabelled += 1
        else:
            records.append(record)
    return LabelsReport(path, "Label Studio", tuple(records), tuple(bad), unlabelled)


def read_label_file(path: str, image_root: str | None = None) -> LabelsReport:
    """A COCO file or a Label Studio export, told apart by its contents.

    Args:
      path: the file.
      image_root: Label Studio's local-storage folder (default: the file's folder).

    Raises:
      DataSourceError: the file cannot be read, is not JSON, or is neither format.
    """
    try:
        document = json.loads(read_regular_file(path))
    except OSError as error:
        raise DataSourceError(
            f"cannot read labels file {path}: {error.strerror or error}"
        ) from None
    except ImageDecodeError:
        raise DataSourceError(f"cannot read labels file {path}: not a regular file") from None
    except ValueError as error:  # JSON's and UTF-8's decode errors alike
        raise DataSourceError(f"labels file {path} is not JSON: {error}") from None
    if isinstance(document, Mapping) and all(key in document for key in COCO_KEYS):
        return coco_records(document, path)
    if isinstance(document, list):
        return labelstudio_records(document, path, image_root)
    raise DataSourceError(
        f"labels file {path} is neither a COCO file (an object with images, annotations "
        "and categories) nor a Label Studio JSON export (a list of tasks)"
    )


def checked_labels(
    paths: Sequence[str], image_root: str | None = None, strict: bool = False
) -> list[LabelsReport]:
    """Reads label files, logging each skipped record and a count line per file.

    Args:
      paths: the label files.
      image_root: Label Studio's local-storage folder (default: each export's folder).
      strict: refuse a file with any bad record instead of skipping it.

    Raises:
      DataSourceError: a file cannot be read or has nothing to train on, or
        ``strict`` and a record is bad.
    """
    reports = []
    for path in paths:
        report = read_label_file(path, image_root)
        for _, name, reason in report.bad:
            logger.warning("labels %s: skipping %s: %s", path, name, reason)
        if report.bad and strict:
            _, name, reason = report.bad[0]
            raise DataSourceError(
                f"labels {path}: {len(report.bad)} bad record(s), first {name}: {reason}"
            )
        (logger.warning if report.bad else logger.info)("%s", report.summary())
        if not report.records:
            raise DataSourceError(f"{report.summary()}: nothing to train on")
        reports.append(report)
    return reports


def read_record(record: LabelRecord, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One record as the model's example, prepared as the folder sources prepare theirs.

    Returns:
      ``(image uint8 [S, S, 3], mask uint8 [S, S, 1])``.

    Raises:
      OSError: the image cannot be read.
      ImageDecodeError: the image does not decode.
      LabelError: the labels do not fit the decoded image.
    """
    image, (height, width) = decode_resized(read_regular_file(record.image_path), image_size)
    # The decoded image's size, not only the file's word for it, must be the labels'.
    class_map = record.class_map(height, width)
    return image, resize_mask(class_map, image_size)[:, :, None]


def check_records(records: Sequence[LabelRecord], image_size: int) -> list[tuple[str, str]]:
    """Reads every record once; returns ``(record, reason)`` for the bad ones."""
    bad = []
    for record in records:
        try:
            read_record(record, image_size)
        except (OSError, ImageDecodeError, LabelError) as error:
            bad.append((f"{record.name} ({record.image_path})", str(error)))
    return bad


def labels_dataset(
    records: Sequence[LabelRecord], image_size: int, strict: bool = False
) -> tf.data.Dataset:
    """A dataset of resized ``(image, mask)`` pairs read from label records.

    Args:
      records: the records, in a fixed order.
      image_size: side S of the square outputs.
      strict: read every record first and raise on a bad one, instead of
        logging and skipping bad records while iterating.

    Raises:
      DataSourceError: no records, or ``strict`` and a record is bad.
    """
    if not records:
        raise DataSourceError("no labelled images to read")
    if strict:
        bad = check_records(records, image_size)
        if bad:
            name, reason = bad[0]
            raise DataSourceError(f"{len(bad)} bad labelled image(s), first {name}: {reason}")
    records = tuple(records)

    def load(index: np.int64):
        record = records[int(index)]
        try:
            image, mask = read_record(record, image_size)
            return image, mask, True
        except (OSError, ImageDecodeError, LabelError) as error:
            logger.warning("skipping %s (%s): %s", record.name, record.image_path, error)
            empty = np.zeros((image_size, image_size, 3), np.uint8)
            return empty, np.zeros((image_size, image_size, 1), np.uint8), False

    def load_tensors(index):
        image, mask, ok = tf.numpy_function(
            load, [index], [tf.uint8, tf.uint8, tf.bool], stateful=False
        )
        image.set_shape([image_size, image_size, 3])
        mask.set_shape([image_size, image_size, 1])
        ok.set_shape([])
        return image, mask, ok

    dataset = tf.data.Dataset.range(len(records))
    dataset = dataset.map(load_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(lambda image, mask, ok: ok)
    return dataset.map(lambda image, mask, ok: (image, mask))
