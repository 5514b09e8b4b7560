"""``petseg review``: the images a run was least sure of, as a Label Studio project to correct.

    petseg review OUT --output DIR [--lowest 200] [--image-root URL_OR_PATH]

writes ``DIR/tasks.json``, the ``--lowest`` images of lowest mean confidence
with their masks as predictions in Label Studio's brush RLE, and
``DIR/labeling-config.xml``, the labelling config to create the project with
(:mod:`petseg.labels.review`). Tasks name each image by its own path or URL
(``gs://``, ``s3://``: connect the bucket as the project's cloud storage), or,
with ``--image-root``, by that root joined with the image's path below its
input folder. Both files are written atomically; DIR may be a bucket, not a
folder inside OUT. OUT and DIR may be in buckets; Beam's S3 and Azure
filesystem flags (``--s3_endpoint_url``...) go as for the job.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from petseg.cli.flags import StrictArgumentParser, apply_storage_flags

PROG = "petseg review"
DEFAULT_LOWEST = 200
EXIT_DONE = 0
EXIT_FAILED = 1


def build_parser(prog: str = PROG) -> StrictArgumentParser:
    """The ``review`` command's flags."""
    parser = StrictArgumentParser(
        prog=prog,
        description="Write a Label Studio tasks file of the images a segmentation run was "
        "least sure of, their masks as predictions, and the labelling config to import it with.",
    )
    parser.add_argument("run", metavar="OUT", help="a finished segmentation job's --output folder")
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="where tasks.json and labeling-config.xml go",
    )
    parser.add_argument(
        "--lowest",
        type=int,
        default=DEFAULT_LOWEST,
        metavar="N",
        help="how many images of lowest mean confidence to pick (default: %(default)s)",
    )
    parser.add_argument(
        "--image-root",
        metavar="URL_OR_PATH",
        help="where Label Studio reads the images: joined with each image's path below its "
        "input folder (default: each image's own path or URL)",
    )
    return parser


def _check_flags(parser: StrictArgumentParser, run: str, output: str, lowest: int) -> None:
    """Refuses (one line, exit 2) a bad count, or DIR inside OUT (the job owns OUT)."""
    from petseg.beam.io import inside, normalise_location

    if lowest < 1:
        parser.error(f"--lowest must be at least 1, got {lowest}")
    if inside(normalise_location(output), normalise_location(run)):
        parser.error(f"--output {output} is inside OUT {run}; choose a folder outside it")


def _import_review():
    # Importing Beam warns, on the root logger, of optional cloud clients that are
    # not installed: nothing a review's user can act on.
    logging.disable(logging.WARNING)
    try:
        from petseg.labels import review
    finally:
        logging.disable(logging.NOTSET)
    return review


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Console entry point (``petseg review``).

    Returns:
      0 when both files are written; 2 for a user's mistake (a bad flag, OUT not a
      finished run, a mask the run lists but does not hold); 1 when DIR cannot be
      written. Each mistake or failure is one line on stderr.
    """
    parser = build_parser(prog)
    args, storage_args = parser.parse_known_args(argv)
    apply_storage_flags(parser, storage_args)
    # Imported once the flags are good: a typo is refused without loading Beam.
    review = _import_review()
    from petseg.beam.faults import FAULT_PREFIX, EnvironmentFault
    from petseg.labels import LabelError

    _check_flags(parser, args.run, args.output, args.lowest)
    try:
        result = review.build_review(args.run, args.lowest, args.image_root)
    except (review.ReviewError, LabelError) as error:
        parser.error(str(error))
    try:
        tasks_path, config_path = review.write_review(result, args.output)
    except (EnvironmentFault, OSError) as error:
        line = str(error).splitlines()[0].removeprefix(FAULT_PREFIX)
        print(f"{prog}: error: {line}", file=sys.stderr)
        return EXIT_FAILED
    print(_written_line(prog, result, tasks_path, config_path))
    return EXIT_DONE


def _written_line(prog: str, result, tasks_path: str, config_path: str) -> str:
    if not result.tasks:
        return f"{prog}: the run lists no images; wrote an empty {tasks_path} and {config_path}"
    return (
        f"{prog}: wrote {len(result.tasks)} of {result.images} images to {tasks_path} and the "
        f"labelling config to {config_path}; mean confidence {result.lowest:.3f} to "
        f"{result.highest:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
