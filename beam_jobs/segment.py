"""Segments every image below one or more inputs with a petseg model, on any Beam runner.

Writes one mask per image, per-image statistics, an error record for each
input that could not be segmented, and a summary that accounts for every
file matched (see docs/segment.md for the layout).

Locally, in this process (DirectRunner)::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/

Locally on every core::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/ \\
      --direct_running_mode multi_processing --direct_num_workers 4

Against a portable job service (the Job API that Flink's job server speaks)::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/ \\
      --runner PortableRunner --job_endpoint localhost:8099 \\
      --environment_type EXTERNAL --environment_config localhost:50000

On Dataflow (add ``--sdk_container_image`` built from the Dockerfile to skip
installing on every worker, ``--dataflow_service_options
"worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"`` for GPUs)::

  python -m beam_jobs.segment --input gs://BUCKET/photos/ --model gs://BUCKET/export \\
      --output gs://BUCKET/masks-run1 --runner DataflowRunner --project PROJECT \\
      --region REGION --temp_location gs://BUCKET/tmp --setup_file ./setup.py

On Flink (SDK workers from the Dockerfile's image)::

  python -m beam_jobs.segment --input gs://BUCKET/photos/ --model gs://BUCKET/export \\
      --output gs://BUCKET/out --runner FlinkRunner --flink_master HOST:8081 \\
      --environment_type DOCKER --environment_config petseg-beam-worker:latest
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from petseg.beam.decode import DEFAULT_MAX_FILE_BYTES, DecodeImages
from petseg.beam.faults import FAULT_PREFIX, EnvironmentFault, fault_message
from petseg.beam.inference import InferProbabilities, SavedModelHandler
from petseg.beam.io import (
    DEFAULT_EXTENSIONS,
    ERRORS_DIR,
    MASKS_DIR,
    STATS_DIR,
    SUMMARY_FILE,
    AssignMaskPaths,
    MatchImages,
    join_path,
)
from petseg.beam.job import SegmentConfigError, SegmentJob, prepare_job
from petseg.beam.postprocess import PostprocessMasks
from petseg.beam.progress import DEFAULT_INTERVAL_S, ProgressReporter
from petseg.beam.records import error_line
from petseg.beam.resume import ListOutputs, PruneOutputs, ReuseMasks
from petseg.beam.runrecord import claim_output, remove_leftovers
from petseg.beam.stats import ComputeImageStatsFn, CountErrorsFn, SummarizeRun, stats_line
from petseg.beam.write import WriteJsonLines, WriteMasks, read_json, write_json, write_summary
from petseg.flags import UnknownFlagError, check_beam_args
from petseg.imageio import DEFAULT_MAX_PIXELS

PROG = "petseg-segment"
DIRECT_RUNNERS = (
    None,
    "DirectRunner",
    "direct",
    "SwitchingDirectRunner",
    "BundleBasedDirectRunner",
)
# Exit statuses of the petseg-segment command.
EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOO_MANY_FAILED_INPUTS = 3


class JobFailedError(RuntimeError):
    """The pipeline did not finish; the message is one line naming the fault."""


class _OneLineParser(argparse.ArgumentParser):
    """Flag errors become :class:`SegmentConfigError`, which ``main`` prints on one line."""

    def error(self, message: str):
        raise SegmentConfigError(message)


def parse_known_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Parses the job's own flags; returns them and every other flag, for Beam.

    Raises:
      SegmentConfigError: a bad value, or a flag that is neither the job's
        nor Beam's (no abbreviations: ``--overlay`` is not ``--overlays``).
    """
    parser = _OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        help="a folder (all images below it), a file or a glob pattern; repeatable",
    )
    parser.add_argument("--model", required=True, help="export folder written by train.py")
    parser.add_argument("--output", required=True, help="output folder OUT (local or a URL)")
    parser.add_argument(
        "--extensions",
        default=",".join(DEFAULT_EXTENSIONS),
        help="comma-separated file extensions to segment (default: %(default)s)",
    )
    parser.add_argument(
        "--min-batch-size",
        type=int,
        default=None,
        help="smallest inference batch (default: the --max-batch-size, since every batch is "
        "padded to it)",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="inference batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images declaring more pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        help="refuse files larger than this (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per worker process that read, decode, upsample and write images "
        "alongside the model (default: the cores available to each process)",
    )
    parser.add_argument(
        "--overlays", action="store_true", help="also write colour overlays under OUT/overlays/"
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="seconds between progress lines on the DirectRunner; 0 turns them off",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the outputs of another run found in OUT instead of refusing them",
    )
    parser.add_argument(
        "--max-failed-fraction",
        type=float,
        default=0.0,
        help="share of matched inputs that may fail (dead-lettered under OUT/errors) before "
        f"the command exits {EXIT_TOO_MANY_FAILED_INPUTS} (default: %(default)s, any failure)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    own_flags = [flag for action in parser._actions for flag in action.option_strings]
    # Every flag is checked before any is parsed, so a typo is named as one
    # rather than reported as the required flag it was meant to be.
    try:
        check_beam_args(argv, own_flags)
    except UnknownFlagError as error:
        raise SegmentConfigError(str(error)) from None
    known_args, pipeline_args = parser.parse_known_args(argv)
    if not 0.0 <= known_args.max_failed_fraction <= 1.0:
        raise SegmentConfigError(
            f"--max-failed-fraction must be between 0 and 1, got {known_args.max_failed_fraction}"
        )
    return known_args, pipeline_args


def build_pipeline(pipeline: beam.Pipeline, job: SegmentJob) -> None:
    """Adds the segmentation job's steps to ``pipeline``."""
    handler = SavedModelHandler(
        job.model.export_dir, min_batch_size=job.min_batch_size, max_batch_size=job.max_batch_size
    )
    # Each threaded step holds up to two batches, so the next batch is decoded
    # and the last one written while the model runs.
    in_flight = 2 * job.max_batch_size
    sources = pipeline | "MatchImages" >> MatchImages(job.inputs, job.extensions)
    committed_outputs = pipeline | "ListOutputs" >> ListOutputs(job.output)
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
        max_in_flight=in_flight,
    )
    model_inputs, decode_errors = (
        (new_sources, changed_sources)
        | "FlattenSourcesToSegment" >> beam.Flatten()
        | "ReshuffleImages" >> beam.Reshuffle()
        | "DecodeImages"
        >> DecodeImages(
            job.model.image_size,
            job.max_pixels,
            job.max_file_bytes,
            keep_original=job.overlays,
            threads=job.threads,
            max_in_flight=in_flight,
        )
    )
    predictions = model_inputs | "RunInference" >> InferProbabilities(handler)
    segmentations, postprocess_errors = predictions | "PostprocessMasks" >> PostprocessMasks(
        job.threads, in_flight
    )
    written, write_errors = segmentations | "WriteMasks" >> WriteMasks(
        job.output,
        model_id=job.model.model_id,
        batch_size=job.max_batch_size,
        overlays=job.overlays,
        threads=job.threads,
        max_in_flight=in_flight,
    )
    new_records = written | "ComputeImageStats" >> beam.ParDo(
        ComputeImageStatsFn(job.model.class_names, job.model.model_id, job.threads, in_flight)
    )
    records = (reused_records, new_records) | "FlattenRecords" >> beam.Flatten()
    errors = (
        (path_errors, decode_errors, postprocess_errors, write_errors)
        | "FlattenErrors" >> beam.Flatten()
        | "CountErrors" >> beam.ParDo(CountErrorsFn())
    )

    _ = (
        records
        | "FormatStats" >> beam.Map(stats_line)
        | "WriteStats" >> WriteJsonLines(join_path(job.output, STATS_DIR), "stats", job.num_shards)
    )
    _ = (
        errors
        | "FormatErrors" >> beam.Map(error_line)
        | "WriteErrors"
        >> WriteJsonLines(join_path(job.output, ERRORS_DIR), "errors", job.num_shards)
    )
    summary_path = join_path(job.output, SUMMARY_FILE)
    _ = (
        (sources, records, errors, reused_records, pruned)
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
        message = fault_message(error)
        if message is None:
            raise  # Not the environment: a defect, whose traceback is worth having.
        raise JobFailedError(message) from error
    if state not in (None, PipelineState.DONE):
        raise JobFailedError(f"the pipeline ended in state {state}")


def run(argv: list[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Runs the segmentation job and returns its summary (as written to ``OUT/summary.json``).

    Args:
      argv: the job's flags and any Beam flags; ``None`` reads ``sys.argv``.
      save_main_session: Beam's option; the job's code lives in ``petseg``, so
        workers import it and this can stay off.

    Raises:
      SegmentConfigError: a flag, the model, an input or the output is
        unusable, or OUT holds another run; nothing has run.
      JobFailedError: a fault of the environment (storage, the model's
        loading) persisted through the runner's retries, or the job was
        cancelled; rerunning the same command resumes.
    """
    known_args, pipeline_args = parse_known_args(argv)
    job = prepare_job(
        inputs=known_args.input,
        model_dir=known_args.model,
        output=known_args.output,
        extensions=known_args.extensions,
        min_batch_size=(
            known_args.max_batch_size
            if known_args.min_batch_size is None
            else known_args.min_batch_size
        ),
        max_batch_size=known_args.max_batch_size,
        max_pixels=known_args.max_pixels,
        max_file_bytes=known_args.max_file_bytes,
        overlays=known_args.overlays,
        threads=known_args.threads,
    )
    try:
        claim_output(job, overwrite=known_args.overwrite)
    except EnvironmentFault as error:
        raise JobFailedError(fault_message(error) or str(error)) from error
    options = PipelineOptions(pipeline_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    runner = options.view_as(StandardOptions).runner

    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, job)
    started = time.monotonic()
    if runner in DIRECT_RUNNERS and known_args.progress_interval > 0:
        with ProgressReporter(
            join_path(job.output, MASKS_DIR), job.matched, known_args.progress_interval
        ):
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
    summary = read_json(summary_path)
    summary["inputs"] = [spec.pattern for spec in job.inputs]
    summary["wall_time_s"] = round(wall_time_s, 3)
    summary["images_per_second"] = (
        round(summary["matched"] / wall_time_s, 3) if wall_time_s else 0.0
    )
    write_json(summary_path, summary)
    remove_leftovers(job, pruned=summary["masks_pruned"] > 0)
    return summary


def segment_images(
    inputs: str | list[str],
    model_dir: str,
    output: str,
    *,
    max_batch_size: int = 32,
    overlays: bool = False,
    overwrite: bool = False,
    beam_args: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs the job from Python with keyword arguments (for the demo and benchmarks).

    Args:
      inputs: one input (folder, file or pattern) or several.
      model_dir: the export folder.
      output: the output folder OUT.
      max_batch_size: inference batch size.
      overlays: also write overlays.
      overwrite: replace another run's outputs in ``output`` instead of refusing.
      beam_args: Beam flags, e.g. ``["--direct_running_mode", "multi_processing"]``.

    Returns:
      The run's summary, as :func:`run` returns it.
    """
    argv = [
        arg
        for text in ([inputs] if isinstance(inputs, str) else inputs)
        for arg in ("--input", text)
    ]
    argv += ["--model", model_dir, "--output", output, "--max-batch-size", str(max_batch_size)]
    if overlays:
        argv.append("--overlays")
    if overwrite:
        argv.append("--overwrite")
    return run([*argv, *beam_args])


class _HideFaultTracebacks(logging.Filter):
    """Drops the log records in which Beam repeats an environment fault with its traceback.

    The driver reports such a fault in one line; other records pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        texts = [record.getMessage()]
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(str(record.exc_info[1]))
        return not any(FAULT_PREFIX in text for text in texts)


def _failed_fraction_line(summary: dict[str, Any], allowed: float, output: str) -> str | None:
    matched, failed = summary["matched"], summary["failed"]
    if not matched or failed / matched <= allowed:
        return None
    return (
        f"{failed} of {matched} inputs failed ({failed / matched:.2%}), more than "
        f"--max-failed-fraction {allowed} allows; their reasons are in "
        f"{join_path(output, ERRORS_DIR)}/"
    )


def main(argv: list[str] | None = None) -> int:
    """The ``petseg-segment`` console script.

    Exit statuses: 0 done; 1 the job failed (a fault of the environment that
    persisted, which a rerun of the same command resumes after) or its counts
    do not reconcile; 2 bad configuration, nothing run; 3 done, every output
    consistent, but more inputs failed than ``--max-failed-fraction`` allows.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    hide_faults = _HideFaultTracebacks()
    for handler in root.handlers:
        handler.addFilter(hide_faults)
    try:
        summary = run(argv)
    except SegmentConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except JobFailedError as error:
        print(
            f"{PROG}: error: the job failed: {error}; rerunning the same command resumes "
            "where it stopped",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        for handler in root.handlers:
            handler.removeFilter(hide_faults)
    reconciliation = summary["reconciliation"]
    print(
        f"{PROG}: {summary['matched']} matched, {summary['masks_written']} masks written "
        f"({summary['masks_reused']} reused), {summary['failed']} failed, "
        f"{summary['masks_pruned']} stale masks pruned in {summary['wall_time_s']:.1f}s "
        f"({summary['images_per_second']:.1f} images/s)",
        file=sys.stderr,
    )
    if not reconciliation["ok"]:
        print(
            f"{PROG}: error: files do not reconcile: {reconciliation['rule']} is off by "
            f"{reconciliation['difference']}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    known_args, _ = parse_known_args(argv)
    too_many = _failed_fraction_line(summary, known_args.max_failed_fraction, known_args.output)
    if too_many is not None:
        print(f"{PROG}: error: {too_many}", file=sys.stderr)
        return EXIT_TOO_MANY_FAILED_INPUTS
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
