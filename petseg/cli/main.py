"""``petseg``: the project's umbrella command.

petseg report OUT [--workdir TRAINING_WORKDIR]   write OUT/report.html
petseg export-formats MODEL [--format F ...]     add serving formats (openvino, onnx, openvino-int8)
petseg review OUT --output DIR [--lowest N]      the least sure images as Label Studio tasks
petseg segment ...                               the Beam job (as beam_jobs/segment.py)
petseg train ... / petseg evaluate ...           train.py and its evaluation
"""

from __future__ import annotations

import sys

from petseg.cli.flags import StrictArgumentParser, unknown_message

PROG = "petseg"
COMMANDS = ("report", "export-formats", "review", "segment", "train", "evaluate")
HELP_FLAGS = ("-h", "--help")


def _report(argv: list[str]) -> int:
    parser = StrictArgumentParser(prog=f"{PROG} report", description="Write OUT/report.html.")
    parser.add_argument("output", help="the segmentation job's --output folder")
    parser.add_argument("--workdir", help="a training workdir whose curves and panels to include")
    parser.add_argument("--samples", type=int, default=12, help="overlays in the sample grid")
    parser.add_argument("--worst", type=int, default=8, help="least confident images shown")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.samples < 0 or args.worst < 0:
        parser.error("--samples and --worst must not be negative")
    # Imported once the flags are good: a typo is refused without loading Beam.
    from petseg.report import ReportError, build_report

    try:
        path = build_report(
            args.output, args.workdir, args.samples, args.worst, show_progress=not args.no_progress
        )
    except ReportError as error:
        print(f"{PROG} report: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _export_formats(argv: list[str]) -> int:
    from petseg.serving.formats import FORMATS

    parser = StrictArgumentParser(
        prog=f"{PROG} export-formats",
        description="Convert an export's SavedModel into serving formats for other runtimes, "
        "listed with their SHA-256 in its petseg.json.",
    )
    parser.add_argument("model", help="a local export folder written by train.py")
    parser.add_argument(
        "--format",
        action="append",
        choices=sorted(FORMATS),
        help="a format to write; repeatable (default: openvino and onnx, where their "
        "converters are installed)",
    )
    parser.add_argument(
        "--calibration-images",
        metavar="DIR",
        help="images to calibrate openvino-int8 on (the first 64 below DIR; training images)",
    )
    args = parser.parse_args(argv)
    from petseg.serving.export import ExportError
    from petseg.serving.formats import CALIBRATED, installed_formats, write_formats

    names = tuple(args.format or [name for name in installed_formats() if name not in CALIBRATED])
    try:
        formats = write_formats(args.model, names, args.calibration_images)
    except ExportError as error:
        print(f"{PROG} export-formats: error: {error}", file=sys.stderr)
        return 2
    for name in names:
        print(f"{name}: {formats[name]['file']} ({formats[name]['converter']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``petseg`` console script: runs the command ``argv[0]`` names with the rest.

    Returns:
      The command's exit status; 2 for no command or an unknown one.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] in HELP_FLAGS:
        print(__doc__.strip())
        return 0
    if argv[0] not in COMMANDS:
        kind, candidates = (
            ("flag", HELP_FLAGS) if argv[0].startswith("-") else ("command", COMMANDS)
        )
        print(f"{PROG}: error: {unknown_message(kind, argv[0], candidates)}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "report":
        return _report(rest)
    if command == "export-formats":
        return _export_formats(rest)
    if command == "review":
        from petseg.cli.review import main as review_main

        return review_main(rest, prog=f"{PROG} review")
    if command == "segment":
        from petseg.cli.segment import main as segment_main

        return segment_main(rest)
    if command == "evaluate":
        from petseg.cli.evaluate import main as evaluate_main

        return evaluate_main(rest, prog=f"{PROG} evaluate")
    from petseg.cli.train import main as train_main

    return train_main(rest, prog=f"{PROG} train")


if __name__ == "__main__":
    sys.exit(main())
