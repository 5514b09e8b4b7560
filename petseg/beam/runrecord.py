"""One run per OUT (ARCHITECTURE.md, contract 8): the run record and what it guards.

Before any mask is written the driver writes ``OUT/petseg-run.json``: the
inputs as given, the model's id and classes, and every setting that changes
what lands in OUT (extensions, limits, the fixed batch shape, overlays).
Threads, progress and Beam's own flags are left out: they change how fast a
run goes, not what it writes.

- No record and no outputs: a new OUT; the record is written.
- The same record: the same command again. The run resumes (see
  :mod:`petseg.beam.resume`): committed masks are reused, masks whose
  inputs are gone are pruned, and the rest is segmented.
- Another record, or outputs without one: refused with one line that says
  what differs, unless ``--overwrite`` asks to delete what is there first.

The summary of the previous run is removed as the new one starts, so an OUT
holds a ``summary.json`` only while it describes what is there.
"""

from __future__ import annotations

import os
from typing import Any

from apache_beam.io.filesystems import FileSystems

from petseg.beam.faults import environment_fault
from petseg.beam.io import join_path
from petseg.beam.job import SegmentConfigError, SegmentJob
from petseg.beam.layout import (
    COCO_DIR,
    COCO_FILE,
    ERRORS_DIR,
    MASKS_DIR,
    OVERLAYS_DIR,
    REPORT_FILE,
    RUN_RECORD_FILE,
    STATS_DIR,
    SUMMARY_FILE,
)
from petseg.beam.shards import remove_spills, shard_name
from petseg.beam.write import delete_if_present, read_json, write_json
from petseg.storage import is_present, is_remote

RECORD_FORMAT = 1
OUTPUT_FOLDERS = (MASKS_DIR, OVERLAYS_DIR, STATS_DIR, ERRORS_DIR, COCO_DIR)
# Written once a run is done, so removed as the next one starts.
OUTPUT_FILES = (SUMMARY_FILE, REPORT_FILE, COCO_FILE)
# How each field of the record is named when it differs.
_FIELD_NAMES = {
    "format": "the record's format",
    "inputs": "--input",
    "model_id": "the model",
    "class_names": "the model's classes",
    "image_size": "the model's input size",
    "extensions": "--extensions",
    "max_pixels": "--max-pixels",
    "max_file_bytes": "--max-file-bytes",
    "batch_size": "--max-batch-size",
    "overlays": "--overlays",
    "stats_format": "--stats-format",
    "backend": "the backend",
    "coco": "--coco/--coco-classes",
}


def run_record(job: SegmentJob) -> dict[str, Any]:
    """What OUT's record says of ``job``: everything that changes its outputs."""
    return {
        "format": RECORD_FORMAT,
        "inputs": [spec.pattern for spec in job.inputs],
        "model_id": job.model.model_id,
        "class_names": list(job.model.class_names),
        "image_size": job.model.image_size,
        "extensions": list(job.extensions),
        "max_pixels": job.max_pixels,
        "max_file_bytes": job.max_file_bytes,
        "batch_size": job.max_batch_size,
        "overlays": job.overlays,
        "stats_format": job.stats_format,
        # Backends may differ in a probability's last bits, so in a pixel on a near tie.
        "backend": job.backend,
        "coco": [job.model.class_names[index] for index in job.coco_classes] or None,
    }


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def differences(held: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``["the model: tiny-b here, tiny-a in OUT", ...]``, in the record's field order."""
    return [
        f"{_FIELD_NAMES.get(key, key)}: {_shown(wanted.get(key))} here, "
        f"{_shown(held.get(key))} in OUT"
        for key in [*wanted, *(key for key in held if key not in wanted)]
        if held.get(key) != wanted.get(key)
    ]


def _exists(path: str, folder: bool = False) -> bool:
    try:
        return is_present(path, folder)
    except Exception as error:
        raise environment_fault(f"cannot look into {path}", error) from error


def holds_outputs(output: str) -> bool:
    """Whether OUT holds anything a segmentation run writes."""
    return any(
        _exists(join_path(output, name), folder=name in OUTPUT_FOLDERS)
        for name in (*OUTPUT_FOLDERS, *OUTPUT_FILES)
    )


def read_record(output: str) -> dict[str, Any] | None:
    """OUT's run record; ``None`` when there is none.

    Raises:
      SegmentConfigError: the record is not one this job can read.
    """
    path = join_path(output, RUN_RECORD_FILE)
    if not _exists(path):
        return None
    try:
        record = read_json(path)
    except (ValueError, UnicodeDecodeError) as error:
        raise SegmentConfigError(
            f"--output {output} holds an unreadable {RUN_RECORD_FILE} ({error}); pass --overwrite "
            "to replace what is there, or choose a new --output"
        ) from None
    if not isinstance(record, dict):
        return {}
    # Records written before backends were named are TensorFlow's; before COCO, without it.
    return {**record, "backend": record.get("backend", "tensorflow"), "coco": record.get("coco")}


def claim_output(job: SegmentJob, overwrite: bool = False) -> bool:
    """Makes OUT this run's, or refuses; returns whether a previous run's record matched.

    Args:
      job: the checked job.
      overwrite: delete a previous run's outputs instead of refusing them.

    Raises:
      SegmentConfigError: OUT belongs to another run (or holds outputs
        without a record) and ``overwrite`` is off.
      EnvironmentFault: OUT cannot be read, cleared or written.
    """
    wanted = run_record(job)
    held = read_record(job.output)
    how = "pass --overwrite to replace what is there, or choose a new --output"
    if overwrite:
        for name in (*OUTPUT_FOLDERS, RUN_RECORD_FILE, *OUTPUT_FILES):
            delete_if_present(join_path(job.output, name), folder=name in OUTPUT_FOLDERS)
        held = None
    elif held is None and holds_outputs(job.output):
        raise SegmentConfigError(
            f"--output {job.output} holds outputs of a run without a {RUN_RECORD_FILE}; {how}"
        )
    elif held is not None and held != wanted:
        raise SegmentConfigError(
            f"--output {job.output} holds another run ({'; '.join(differences(held, wanted))}); "
            f"{how}"
        )
    # The old summary described the old run; this one is not finished yet.
    for name in OUTPUT_FILES:
        delete_if_present(join_path(job.output, name))
    if held is None:
        write_json(join_path(job.output, RUN_RECORD_FILE), wanted)
    return held is not None


def remove_leftovers(job: SegmentJob, pruned: bool) -> None:
    """After a finished run: the tables' sorted runs, shards of another shard count,
    and emptied folders.

    Args:
      job: the job that finished.
      pruned: whether it deleted masks (only then can folders be left empty).
    """
    tables = [(STATS_DIR, "stats", job.stats_format), (ERRORS_DIR, "errors", job.stats_format)]
    if job.coco_classes:
        tables.append((COCO_DIR, "coco", "jsonl"))
    for folder, prefix, suffix in tables:
        directory = join_path(job.output, folder)
        remove_spills(directory)
        keep = {
            shard_name(directory, prefix, i, job.num_shards, suffix) for i in range(job.num_shards)
        }
        try:
            listed = FileSystems.match([join_path(directory, "*")])[0].metadata_list
        except Exception as error:
            raise environment_fault(f"cannot list {directory}", error) from error
        for metadata in listed:
            if metadata.path not in keep:
                delete_if_present(metadata.path)
    if not pruned or is_remote(job.output):
        return  # Object stores have no empty folders.
    for name in (MASKS_DIR, OVERLAYS_DIR):
        root = join_path(job.output, name)
        # Bottom-up, so a folder whose only content was emptied folders goes too.
        for directory, _, _ in os.walk(root, topdown=False):
            if directory != root and not os.listdir(directory):
                os.rmdir(directory)
