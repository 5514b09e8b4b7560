"""Picking the images the model was least sure of, as Label Studio tasks to correct.

A finished run's statistics tables (``OUT/stats/``) give each image's mean
confidence: the mean, over its pixels, of the winning class's probability.
The review takes the N images of lowest mean confidence, reading the tables
one record at a time and keeping only the N lowest on a heap, so a run of
millions of images costs N records of memory; ties go to the smaller path,
so the same OUT always gives the same selection. Each picked image's mask
(``OUT/masks/``) becomes a task's prediction (:mod:`petseg.labels.labelstudio`).

Why mean confidence: on the shared sample's test split, with the demo's model,
the 10, 20 and 30 images it ranks lowest have a mean IoU 0.12 to 0.19 below
the rest's, within 0.02 of what the share of pixels under 0.6 confidence picks
and lower than what the entropy near class boundaries picks; and the job
already writes it for every image (figures: ``python -m benchmarks.review_measure``).

OUT is read through Beam's filesystems, so it may be in a bucket.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from apache_beam.io.filesystems import FileSystems

from petseg.beam.io import join_path
from petseg.beam.layout import RUN_RECORD_FILE, STATS_DIR, SUMMARY_FILE, TEMP_MARKER
from petseg.beam.tables import iter_table
from petseg.beam.write import read_file, read_json, read_written_mask, write_atomically
from petseg.classes import BACKGROUND, CLASS_NAMES
from petseg.labels.labelstudio import labeling_config, review_task

TASKS_FILE = "tasks.json"
CONFIG_FILE = "labeling-config.xml"
# The statistics field the review ranks by, lowest first.
MEASURE = "mean_confidence"


class ReviewError(ValueError):
    """OUT cannot be reviewed (an unfinished run, no statistics, a missing mask); the
    message says which and why, in one line."""


@dataclass(frozen=True)
class Review:
    """What a review writes, and what it read.

    Attributes:
      tasks: Label Studio tasks, least sure first.
      config: the labelling config (XML) to create the project with.
      images: the images the statistics list.
      lowest: the picked images' lowest mean confidence (``None`` when none were picked).
      highest: their highest.
    """

    tasks: list[dict[str, Any]]
    config: str
    images: int
    lowest: float | None
    highest: float | None


def stats_files(output: str) -> list[str]:
    """The statistics tables' shards of OUT, sorted.

    Raises:
      ReviewError: OUT is no finished run (no summary.json), or has no statistics.
    """
    try:
        finished = FileSystems.exists(join_path(output, SUMMARY_FILE))
        matched = FileSystems.match([join_path(output, STATS_DIR, "stats-*")])[0].metadata_list
    except Exception as error:  # Beam wraps a filesystem's own errors in BeamIOError.
        raise ReviewError(f"cannot read {output}: {error}") from None
    if not finished:
        raise ReviewError(f"{output} is not a finished segmentation run: it has no {SUMMARY_FILE}")
    paths = sorted(
        metadata.path
        for metadata in matched
        if TEMP_MARKER not in metadata.path and metadata.path.endswith((".jsonl", ".parquet"))
    )
    if not paths:
        raise ReviewError(f"{output} has no statistics tables under {STATS_DIR}/")
    return paths


def read_records(paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The statistics records of JSON Lines or Parquet shards, one at a time.

    Raises:
      ReviewError: a shard cannot be read or parsed.
    """
    for path in paths:
        try:
            yield from iter_table([path])
        except (OSError, ValueError) as error:  # Arrow's and JSON's errors are ValueErrors.
            raise ReviewError(f"cannot read {path}: {error}".splitlines()[0]) from None


def _rank(record: Mapping[str, Any]) -> tuple[float, str]:
    try:
        return float(record[MEASURE]), str(record["path"])
    except (KeyError, TypeError, ValueError):
        raise ReviewError(
            f"a statistics record has no {MEASURE} and path: {json.dumps(record)[:200]}"
        ) from None


def least_sure(records: Iterable[Mapping[str, Any]], count: int) -> list[Mapping[str, Any]]:
    """The ``count`` records of lowest mean confidence, lowest first, ties by path.

    Only ``count`` records are held at once (a heap), however many come in.

    Raises:
      ReviewError: a record has no mean confidence or path.
    """
    return heapq.nsmallest(count, records, key=_rank)


def image_url(record: Mapping[str, Any], source: str | None, image_root: str | None) -> str:
    """Where Label Studio reads a picked image.

    Args:
      record: the image's statistics record; its ``path`` is the image's own
        path or URL (``gs://``, ``s3://``: Label Studio reads those through its
        connected cloud storage).
      source: the image's path below its input root (the mask's provenance).
      image_root: where the input roots' images are served from; ``None``: the
        image's own path.

    Raises:
      ReviewError: ``image_root`` is given, but the mask does not say its source.
    """
    if image_root is None:
        return str(record["path"])
    if source is None:
        raise ReviewError(
            f"{record['mask_path']} does not record its image's relative path, so "
            "--image-root cannot be applied to it; leave --image-root out"
        )
    # A web server wants the path's spaces and the like escaped; a bucket's key is as is.
    relative = quote(source) if image_root.startswith(("http://", "https://")) else source
    return join_path(image_root, relative)


def read_mask(output: str, record: Mapping[str, Any]) -> tuple[Any, str | None]:
    """A picked image's mask and its image's relative path (``None`` if unrecorded).

    Raises:
      ReviewError: the mask is missing, unreadable, or not the size its record says.
    """
    path = join_path(output, str(record["mask_path"]))
    try:
        mask, provenance = read_written_mask(read_file(path))
    except Exception as error:  # A missing file, or Pillow's or the chunk's ValueError.
        raise ReviewError(f"cannot read the mask {path}: {error}".splitlines()[0]) from None
    size = (int(record.get("width", mask.shape[1])), int(record.get("height", mask.shape[0])))
    if size != (mask.shape[1], mask.shape[0]):
        raise ReviewError(
            f"{path} is {mask.shape[1]}x{mask.shape[0]}, but its statistics say {size[0]}x{size[1]}"
        )
    return mask, (provenance.source if provenance is not None else None)


def run_classes(output: str) -> tuple[list[str], int]:
    """OUT's class names (its run record's, else its summary's, else petseg's) and the
    background class's index."""
    names: Sequence[str] = CLASS_NAMES
    for name in (RUN_RECORD_FILE, SUMMARY_FILE):
        path = join_path(output, name)
        if FileSystems.exists(path):
            names = read_json(path).get("class_names") or names
            break
    names = [str(name) for name in names]
    return names, names.index("background") if "background" in names else BACKGROUND


def build_review(output: str, count: int, image_root: str | None = None) -> Review:
    """The Label Studio tasks of OUT's ``count`` least sure images, and the labelling config.

    Args:
      output: a finished run's output folder OUT (local or a URL).
      count: how many images to pick (fewer when OUT has fewer).
      image_root: where the images are served from (the picked images' paths
        below their input root are joined to it); ``None``: their own paths.

    Raises:
      ReviewError: OUT is no finished run, has no statistics, or a picked mask
        cannot be read (see :func:`stats_files`, :func:`read_mask`).
      ConverterMissingError: Label Studio's converter is not installed.
    """
    class_names, background = run_classes(output)
    seen = 0

    def counted(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal seen
        for record in records:
            seen += 1
            yield record

    picked = least_sure(counted(read_records(stats_files(output))), count)
    tasks = []
    for record in picked:
        mask, source = read_mask(output, record)
        data = {"path": record["path"], "mask_path": record["mask_path"], MEASURE: record[MEASURE]}
        task = review_task(
            image_url(record, source, image_root),
            mask,
            class_names,
            background,
            str(record.get("model_id", "")),
            float(record[MEASURE]),
            data,
        )
        tasks.append(task)
    confidences = [float(record[MEASURE]) for record in picked]
    return Review(
        tasks,
        labeling_config(class_names, background),
        seen,
        min(confidences, default=None),
        max(confidences, default=None),
    )


def tasks_json(tasks: Sequence[dict[str, Any]]) -> bytes:
    """The tasks as a JSON list, one task a line, keys sorted: the same bytes on every run."""
    lines = ",\n".join(json.dumps(task, sort_keys=True, separators=(",", ":")) for task in tasks)
    return f"[\n{lines}\n]\n".encode() if tasks else b"[]\n"


def write_review(review: Review, folder: str) -> tuple[str, str]:
    """Writes ``folder/tasks.json`` and ``folder/labeling-config.xml``, each atomically;
    returns their paths.

    Raises:
      EnvironmentFault: a file cannot be written.
      OSError: a name the filesystem cannot hold.
    """
    tasks_path, config_path = (join_path(folder, name) for name in (TASKS_FILE, CONFIG_FILE))
    write_atomically(tasks_path, tasks_json(review.tasks))
    write_atomically(config_path, review.config.encode())
    return tasks_path, config_path
