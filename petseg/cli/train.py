"""The training command (``train.py``, ``petseg-train``, ``petseg train``): flags -> config -> training.

Every flag is a field of :class:`~petseg.training.config.TrainConfig`; TensorFlow is
loaded only once the flags are good, so ``--help`` and a typo answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from petseg.cli.flags import (
    StrictArgumentParser,
    UnknownFlagError,
    add_config_flags,
    apply_storage_flags,
    config_values,
    unknown_message,
)
from petseg.training.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    from petseg.training.loop import TrainingResult

PROG = "train.py"


def build_parser(prog: str = PROG) -> StrictArgumentParser:
    """Every field of ``TrainConfig`` as a flag, and ``--workdir``."""
    parser = StrictArgumentParser(
        prog=prog,
        description="Train the MobileNetV2 U-Net (MirroredStrategy over all visible GPUs) and "
        "export it to WORKDIR/export. 'train.py evaluate --help' scores an export.",
        epilog="A WORKDIR in a bucket (gs://, s3://...) also takes Beam's filesystem flags, "
        "e.g. --s3_endpoint_url, --s3_region_name, --azure_connection_string.",
    )
    add_config_flags(parser, TrainConfig)
    parser.add_argument(
        "--workdir",
        default="runs/train",
        help="outputs: checkpoints, backup (resume), logs, plots, export; a folder or a "
        "bucket URL (default: %(default)s)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None, prog: str = PROG) -> tuple[TrainConfig, str]:
    """The training settings and the workdir from ``argv``; a bucket workdir's filesystem
    flags are set for Beam's filesystems.

    A bad flag or value exits with status 2 and one line (argparse's ``error``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    if argv and not argv[0].startswith("-"):
        # Training takes no positional argument: a leading word is a mistyped command.
        parser.error(unknown_message("command", argv[0], ["evaluate"]))
    args, storage_args = parser.parse_known_args(argv)
    apply_storage_flags(parser, storage_args)
    try:
        config = TrainConfig(**config_values(TrainConfig, args))
    except (ConfigError, UnknownFlagError) as error:
        parser.error(str(error))
    return config, args.workdir


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> TrainingResult:
    """Trains, evaluates and exports as ``argv`` says; returns what was exported."""
    from petseg.training.loop import train_and_evaluate

    config, workdir = parse_args(argv, prog)
    return train_and_evaluate(config, workdir)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix, imported only once one was raised (they
    live beside TensorFlow, which a bad flag must not wait for)."""
    from petseg.serving.export import ExportError
    from petseg.training.data import DataSourceError
    from petseg.training.model import EncoderWeightsError

    return ConfigError, DataSourceError, EncoderWeightsError, ExportError


def main(
    argv: Sequence[str] | None = None,
    prog: str = PROG,
    run: Callable[[Sequence[str], str], TrainingResult] = run,
) -> int:
    """``train.py`` and ``petseg train``: ``run`` trains and exports; ``... evaluate`` scores
    an export.

    Returns:
      The exit status: 0 exported, 2 a bad flag, configuration or data.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:
        from petseg.cli.evaluate import main as evaluate_main

        return evaluate_main(argv[1:], prog=f"{prog} evaluate")
    import logging

    # force: importing Beam (for a bucket workdir) may already have configured the root logger.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    try:
        result = run(argv, prog)
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        # A user mistake: one line, no traceback, argparse's exit status.
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"exported {result.model_id} to {result.export_dir}")
    return 0
