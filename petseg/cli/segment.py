"""The ``petseg-segment`` command: flags -> :class:`SegmentConfig` -> the job -> an exit status.

``beam_jobs/segment.py`` (the driver, with the commands for every runner)
and ``petseg segment`` both end in :func:`main`, which turns how the job ended into
one line and an exit status. The job's own flags come from
:class:`~petseg.beam.job.SegmentConfig`; every other flag goes to Beam, once
checked to be one of Beam's (Beam silently drops flags it does not know).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from petseg.beam.faults import FAULT_PREFIX
from petseg.beam.io import join_path
from petseg.beam.job import (
    DEFAULT_BATCH_SIZE,
    SegmentConfig,
    SegmentConfigError,
    SegmentJob,
    prepare_job,
)
from petseg.beam.layout import ERRORS_DIR
from petseg.beam.pipeline import JobFailedError, run_job
from petseg.cli.flags import (
    StrictArgumentParser,
    UnknownFlagError,
    add_config_flags,
    check_beam_args,
    config_values,
    parser_flags,
)

PROG = "petseg-segment"
DESCRIPTION = (
    "Segments every image below one or more inputs with a petseg model, on any Beam runner."
)
# Exit statuses of the command.
EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOO_MANY_FAILED_INPUTS = 3


class _OneLineParser(StrictArgumentParser):
    """Flag errors become :class:`SegmentConfigError`, which ``main`` prints on one line."""

    def error(self, message: str):
        raise SegmentConfigError(message)


def parse_known_args(argv: list[str] | None) -> tuple[SegmentConfig, list[str]]:
    """The job's settings from its flags, and every other flag, for Beam.

    Raises:
      SegmentConfigError: a bad value, or a flag that is neither the job's
        nor Beam's (no abbreviations: ``--overlay`` is not ``--overlays``).
    """
    parser = _OneLineParser(prog=PROG, description=DESCRIPTION, allow_abbrev=False)
    add_config_flags(parser, SegmentConfig)
    argv = list(sys.argv[1:] if argv is None else argv)
    own_flags = parser_flags(parser)
    # Every flag is checked before any is parsed, so a typo is named as one
    # rather than reported as the required flag it was meant to be.
    try:
        check_beam_args(argv, own_flags)
    except UnknownFlagError as error:
        raise SegmentConfigError(str(error)) from None
    known_args, beam_args = parser.parse_known_args(argv)
    values = config_values(SegmentConfig, known_args)
    return SegmentConfig(**{**values, "input": tuple(values["input"])}), beam_args


def checked_job(argv: list[str] | None) -> tuple[SegmentJob, list[str]]:
    """The job its flags describe, checked whole (model, inputs, OUT), and Beam's flags.

    Raises:
      SegmentConfigError: a flag, the model, an input or the output is unusable.
    """
    config, beam_args = parse_known_args(argv)
    # The driver's own reads and writes (the checks, the run record) go through
    # the filesystems Beam's flags configure (--s3_endpoint_url and the like).
    FileSystems.set_options(PipelineOptions(beam_args))
    return prepare_job(config), beam_args


def run(argv: list[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Runs the segmentation job from its flags and returns its summary.

    Args:
      argv: the job's flags and any Beam flags; ``None`` reads ``sys.argv``.
      save_main_session: Beam's option (see :func:`~petseg.beam.pipeline.run_job`).

    Raises:
      SegmentConfigError: a flag, the model, an input or the output is
        unusable, or OUT holds another run; nothing has run.
      JobFailedError: the job failed on a fault of its environment; rerunning
        the same command resumes.
    """
    job, beam_args = checked_job(argv)
    return run_job(job, beam_args, save_main_session=save_main_session)


def segment_images(
    inputs: str | list[str],
    model_dir: str,
    output: str,
    *,
    max_batch_size: int = DEFAULT_BATCH_SIZE,
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


def main(
    argv: list[str] | None = None,
    run: Callable[[list[str]], dict[str, Any]] = run,
) -> int:
    """The ``petseg-segment`` console script: ``run`` runs the job, this reports how it ended.

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
        f"({summary['images_per_second']:.1f} images/s, backend {summary['backend']})",
        file=sys.stderr,
    )
    if not reconciliation["ok"]:
        print(
            f"{PROG}: error: files do not reconcile: {reconciliation['rule']} is off by "
            f"{reconciliation['difference']}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    config, _ = parse_known_args(argv)
    too_many = _failed_fraction_line(summary, config.max_failed_fraction, config.output)
    if too_many is not None:
        print(f"{PROG}: error: {too_many}", file=sys.stderr)
        return EXIT_TOO_MANY_FAILED_INPUTS
    return EXIT_DONE
