"""The segmentation job as a Beam pipeline, and running it to its summary.

``build_pipeline`` adds the job's steps to a pipeline (a table of contents:
each step is a composite transform of :mod:`petseg.beam`); ``run_job`` claims
OUT for the run, runs the pipeline on the runner its options name, and
returns the summary it wrote. Commands and drivers build the
:class:`~petseg.beam.job.SegmentJob` first (:mod:`petseg.cli.segment`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineState

from petseg.beam.coco import WriteCoco, assemble_coco
from petseg.beam.decode import DecodeImages
from petseg.beam.faults import EnvironmentFault, engine_failure_message, fault_message
from petseg.beam.inference import InferProbabilities, PetsegModelHandler
from petseg.beam.io import AssignMaskPaths, MatchImages, join_path
from petseg.beam.job import SegmentJob
from petseg.beam.layout import COCO_FILE, ERRORS_DIR, MASKS_DIR, STATS_DIR, SUMMARY_FILE
from petseg.beam.masks import PostprocessMasks
from petseg.beam.progress import ProgressReporter
from petseg.beam.records import error_line
from petseg.beam.resume import ListOutputs, PruneOutputs, ReuseMasks
from petseg.beam.runrecord import claim_output, remove_leftovers
from petseg.beam.shards import WriteTable
from petseg.beam.stats import ComputeImageStatsFn, CountErrorsFn, SummarizeRun, stats_line
from petseg.beam.tables import errors_format, stats_format
from petseg.beam.threaded import available_cores
from petseg.beam.write import (
    WriteMasks,
    delete_if_present,
    read_json,
    write_json,
    write_summary,
)

DIRECT_RUNNERS = (
    None,
    "DirectRunner",
    "direct",
    "SwitchingDirectRunner",
    "BundleBasedDirectRunner",
)


class JobFailedError(RuntimeError):
    """The pipeline did not finish; the message is one line naming the fault."""


def build_pipeline(pipeline: beam.Pipeline, job: SegmentJob) -> None:
    """Adds the segmentation job's steps to ``pipeline``: resume, segment, write, summarize."""
    sources = pipeline | "MatchImages" >> MatchImages(job.inputs, job.extensions)
    resumed = sources | "Resume" >> Resume(job)
    segmented = resumed.to_segment | "Segment" >> Segment(job)
    errors = (
        (resumed.path_errors, *segmented.errors)
        | "FlattenErrors" >> beam.Flatten()
        | "CountErrors" >> beam.ParDo(CountErrorsFn())
    )
    # Records go on from the steps that make them, unflattened: a Flatten of
    # several steps' outputs is a step of its own, which the DirectRunner
    # would feed from its memory, every record at once.
    records = (segmented.records, resumed.reused_records)
    _ = (records, errors) | "WriteTables" >> WriteTables(job)
    if job.coco_classes:
        _ = records | "WriteCoco" >> WriteCoco(
            job.output, job.coco_classes, job.num_shards, job.threads, _in_flight(job)
        )
    _ = (
        sources,
        segmented.records,
        errors,
        resumed.reused_records,
        resumed.pruned,
    ) | "Summarize" >> Summarize(job)


def _in_flight(job: SegmentJob) -> int:
    # Each threaded step holds up to two batches, so the next batch is decoded
    # and the last one written while the model runs.
    return 2 * job.max_batch_size


class Resumed(NamedTuple):
    """What :class:`Resume` sorts the matched sources into."""

    to_segment: beam.PCollection  # sources without a committed mask, or whose image changed
    path_errors: beam.PCollection  # sources refused for their mask path (a collision)
    reused_records: beam.PCollection  # statistics records of the masks reused
    pruned: beam.PCollection  # stale masks removed


class Resume(beam.PTransform):
    """Sorts the matched sources against what OUT holds (:mod:`petseg.beam.resume`)."""

    def __init__(self, job: SegmentJob):
        super().__init__()
        self._job = job

    def expand(self, sources):
        job = self._job
        committed_outputs = sources.pipeline | "ListOutputs" >> ListOutputs(job.output)
        new_sources, path_errors, committed, stale = (
            sources,
            committed_outputs,
        ) | "AssignMaskPaths" >> AssignMaskPaths()
        pruned = stale | "PruneOutputs" >> PruneOutputs()
        reused_records, changed_sources = committed | "ReuseMasks" >> ReuseMasks(
            job.output,
            job.model.class_names,
            job.model.model_id,
            job.max_batch_size,
            threads=job.threads,
            max_in_flight=_in_flight(job),
        )
        # No reshuffle: the grouping by mask path has spread the images over
        # the workers already, one key each.
        to_segment = (new_sources, changed_sources) | "FlattenSourcesToSegment" >> beam.Flatten()
        return Resumed(to_segment, path_errors, reused_records, pruned)


class Segmented(NamedTuple):
    """What :class:`Segment` makes of the sources."""

    records: beam.PCollection  # the statistics record of each mask written
    errors: tuple[beam.PCollection, ...]  # decode, postprocess and write errors


class Segment(beam.PTransform):
    """Decodes, infers, postprocesses and writes each source's mask, and computes its
    statistics record."""

    def __init__(self, job: SegmentJob):
        super().__init__()
        self._job = job

    def expand(self, sources):
        job = self._job
        in_flight = _in_flight(job)
        model_inputs, decode_errors = sources | "DecodeImages" >> DecodeImages(
            job.model.image_size,
            job.max_pixels,
            job.max_file_bytes,
            keep_original=job.overlays,
            threads=job.threads,
            max_in_flight=in_flight,
        )
        predictions = model_inputs | "RunInference" >> InferProbabilities(_model_handler(job))
        segmentations, postprocess_errors = predictions | "PostprocessMasks" >> PostprocessMasks(
            job.threads, in_flight, per_class=bool(job.coco_classes)
        )
        written, write_errors = segmentations | "WriteMasks" >> WriteMasks(
            job.output,
            model_id=job.model.model_id,
            batch_size=job.max_batch_size,
            overlays=job.overlays,
            threads=job.threads,
            max_in_flight=in_flight,
        )
        records = written | "ComputeImageStats" >> beam.ParDo(
            ComputeImageStatsFn(job.model.class_names, job.model.model_id, job.threads, in_flight)
        )
        return Segmented(records, (decode_errors, postprocess_errors, write_errors))


def _model_handler(job: SegmentJob) -> PetsegModelHandler:
    return PetsegModelHandler(
        job.model.export_dir,
        backend=job.backend,
        min_batch_size=job.min_batch_size,
        max_batch_size=job.max_batch_size,
        share_model=job.share_model,
        model_copies=job.model_copies,
        accelerator=job.accelerator,
    )


class WriteTables(beam.PTransform):
    """Writes the statistics records and the error records as sorted table shards,
    ``OUT/stats/`` and ``OUT/errors/`` (:mod:`petseg.beam.shards`)."""

    def __init__(self, job: SegmentJob):
        super().__init__()
        self._job = job

    def expand(self, records_and_errors):
        records, errors = records_and_errors
        job = self._job
        stats_table = stats_format(job.stats_format, job.model.class_names)
        tables = (
            (records, stats_line, STATS_DIR, stats_table),
            ((errors,), error_line, ERRORS_DIR, errors_format(job.stats_format)),
        )
        for parts, line, folder, table_format in tables:
            _ = parts | f"Write{folder.capitalize()}" >> WriteTable(
                join_path(job.output, folder), folder, job.num_shards, table_format, row=line
            )
        return beam.pvalue.PDone(records[0].pipeline)


class Summarize(beam.PTransform):
    """Counts every input into the run's summary and writes ``OUT/summary.json``."""

    def __init__(self, job: SegmentJob):
        super().__init__()
        self._job = job

    def expand(self, counted):
        job = self._job
        summary_path = join_path(job.output, SUMMARY_FILE)
        return (
            counted
            | "SummarizeRun" >> SummarizeRun(job.model.class_names, job.model.model_id)
            | "WriteSummary" >> beam.Map(write_summary, summary_path)
        )


def _run_pipeline(pipeline: beam.Pipeline) -> None:
    """Runs ``pipeline`` to the end.

    Raises:
      JobFailedError: an environment fault persisted, or the runner reports
        the job did not finish.
    """
    try:
        state = pipeline.run().wait_until_finish()
    except Exception as error:
        message = fault_message(error) or engine_failure_message(error)
        if message is None:
            raise  # Not the environment: a defect, whose traceback is worth having.
        raise JobFailedError(message) from error
    if state not in (None, PipelineState.DONE):
        raise JobFailedError(f"the pipeline ended in state {state}")


def default_threads(options: PipelineOptions) -> int | None:
    """Threads per worker process for the job's threaded steps, fitted to the runner.

    Dataflow runs one SDK process per vCPU (unless told otherwise with the
    ``no_use_multiple_sdk_containers`` experiment), so each process takes one
    thread; the DirectRunner's multi-processing mode shares the cores out
    among its workers; anything else gets every core of its process (``None``).
    """
    runner = options.view_as(StandardOptions).runner
    experiments = options.view_as(DebugOptions).experiments or []
    if "Dataflow" in str(runner):
        return None if "no_use_multiple_sdk_containers" in experiments else 1
    direct = options.view_as(DirectOptions)
    if runner in DIRECT_RUNNERS and direct.direct_running_mode == "multi_processing":
        workers = direct.direct_num_workers or available_cores()
        return max(1, available_cores() // workers)
    return None


def run_job(
    job: SegmentJob, beam_args: list[str], *, save_main_session: bool = False
) -> dict[str, Any]:
    """Claims OUT for ``job``, runs it, and returns its summary (as in ``OUT/summary.json``).

    Args:
      job: the checked job (:func:`petseg.beam.job.prepare_job`).
      beam_args: Beam's flags, for ``PipelineOptions``.
      save_main_session: Beam's option; the job's code lives in ``petseg``,
        which workers import, so it can stay off.

    Raises:
      SegmentConfigError: OUT holds another run; nothing has run.
      JobFailedError: a fault of the environment (storage, the model's
        loading) persisted through the runner's retries, or the job was
        cancelled; rerunning the same command resumes.
    """
    try:
        claim_output(job, overwrite=job.overwrite)
    except EnvironmentFault as error:
        raise JobFailedError(fault_message(error) or str(error)) from error
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    runner = options.view_as(StandardOptions).runner
    if job.threads is None:
        job = dataclasses.replace(job, threads=default_threads(options))

    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, job)
    started = time.monotonic()
    if runner in DIRECT_RUNNERS and job.progress_interval > 0:
        interval = job.progress_interval
        with ProgressReporter(join_path(job.output, MASKS_DIR), job.matched, interval):
            _run_pipeline(pipeline)
    else:
        _run_pipeline(pipeline)
    wall_time_s = time.monotonic() - started
    try:
        return _finish(job, wall_time_s)
    except EnvironmentFault as error:
        raise JobFailedError(fault_message(error) or str(error)) from error


def _finish(job: SegmentJob, wall_time_s: float) -> dict[str, Any]:
    """Adds the driver's figures to the summary and clears what the run left behind."""
    # Timing lives only in summary.json: statistics and masks stay byte-identical on reruns.
    summary_path = join_path(job.output, SUMMARY_FILE)
    coco = _assemble_coco(job, summary_path) if job.coco_classes else None
    summary = read_json(summary_path)
    summary["inputs"] = [spec.pattern for spec in job.inputs]
    summary["backend"] = job.backend
    if coco is not None:
        summary["coco"] = coco
    summary["wall_time_s"] = round(wall_time_s, 3)
    summary["images_per_second"] = (
        round(summary["matched"] / wall_time_s, 3) if wall_time_s else 0.0
    )
    write_json(summary_path, summary)
    remove_leftovers(job, pruned=summary["masks_pruned"] > 0)
    return summary


def _assemble_coco(job: SegmentJob, summary_path: str) -> dict[str, Any]:
    """Writes ``OUT/coco.json``; returns its part of the summary. Until it is
    written the run is not done, so a failure takes the summary away too."""
    names = job.model.class_names
    try:
        counts = assemble_coco(
            job.output, job.num_shards, names, job.coco_classes, job.model.model_id
        )
    except EnvironmentFault:
        delete_if_present(summary_path)
        raise
    return {"file": COCO_FILE, "classes": [names[index] for index in job.coco_classes], **counts}
