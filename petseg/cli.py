"""``petseg``: the project's umbrella command.

petseg report OUT [--workdir TRAINING_WORKDIR]   write OUT/report.html
petseg segment ...                               the Beam job (beam_jobs.segment)
petseg train ... / petseg evaluate ...           train.py and its evaluation
"""

from __future__ import annotations

import argparse
import sys

PROG = "petseg"


def _report(argv: list[str]) -> int:
    from petseg.report import ReportError, build_report

    parser = argparse.ArgumentParser(prog=f"{PROG} report", description="Write OUT/report.html.")
    parser.add_argument("output", help="the segmentation job's --output folder")
    parser.add_argument("--workdir", help="a training workdir whose curves and panels to include")
    parser.add_argument("--samples", type=int, default=12, help="overlays in the sample grid")
    parser.add_argument("--worst", type=int, default=8, help="least confident images shown")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.samples < 0 or args.worst < 0:
        parser.error("--samples and --worst must not be negative")
    try:
        path = build_report(
            args.output, args.workdir, args.samples, args.worst, show_progress=not args.no_progress
        )
    except ReportError as error:
        print(f"{PROG} report: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("report", "segment", "train", "evaluate")
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "report":
        return _report(rest)
    if command == "segment":
        from beam_jobs.segment import main as segment_main

        return segment_main(rest)
    if command == "evaluate":
        from petseg.evaluate import main as evaluate_main

        return evaluate_main(rest, prog=f"{PROG} evaluate")
    import train

    return train.main(rest)


if __name__ == "__main__":
    sys.exit(main())
