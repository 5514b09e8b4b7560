"""``petseg-evaluate`` and ``train.py evaluate``: flags -> :func:`evaluate_export` -> a JSON report.

The scoring itself is :mod:`petseg.training.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from petseg.classes import DEFAULT_MASK_VALUES
from petseg.cli.flags import StrictArgumentParser
from petseg.serving.backends import BACKENDS


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The ``evaluate`` command's flags."""
    parser = StrictArgumentParser(
        prog=prog,
        description="Score an exported model at the original resolution of labelled images: "
        "pixel accuracy, IoU per class, mean IoU.",
    )
    parser.add_argument("--model", required=True, help="export folder written by train.py")
    parser.add_argument("--data-dir", help="Oxford-IIIT Pet layout folder (images/, annotations/)")
    parser.add_argument(
        "--split", default="test", choices=("test", "trainval", "all"), help="Oxford split list"
    )
    parser.add_argument("--images-dir", help="instead of --data-dir: folder of images")
    parser.add_argument("--masks-dir", help="masks matching --images-dir by file stem")
    parser.add_argument(
        "--mask-values",
        default=DEFAULT_MASK_VALUES,
        help="stored mask value -> class index for --masks-dir (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        default="tensorflow",
        choices=("auto", *BACKENDS),
        help="the runtime that runs the model (as the job's --backend) (default: %(default)s)",
    )
    parser.add_argument(
        "--output", help="JSON report path (default: eval_<split>.json beside the export folder)"
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Console entry point (``petseg-evaluate``, ``train.py evaluate``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Imported once the flags are good: a typo is refused without loading TensorFlow.
    from petseg.serving.export import ExportError
    from petseg.training.data import DataSourceError
    from petseg.training.evaluate import default_output, evaluate_export
    from petseg.training.metrics import format_metrics

    try:
        report = evaluate_export(
            args.model,
            args.data_dir,
            args.split,
            args.images_dir,
            args.masks_dir,
            args.mask_values,
            backend=args.backend,
        )
    except (ExportError, DataSourceError) as error:
        parser.error(str(error))
    output = args.output or default_output(args.model, report["split"])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(
        f"{report['model_id']} on {report['split']} ({report['images']} images, original "
        f"resolution, {report['backend']}): {format_metrics(report)}"
    )
    print(f"report: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
