"""The training command (``train.py``, ``petseg-train``, ``petseg train``): flags -> config -> training.

Every flag is a field of :class:`~petseg.training.config.TrainConfig`; TensorFlow is
loaded only once the flags are good, so ``--help`` and a typo answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from petseg.flags import (
    StrictArgumentParser,
    UnknownFlagError,
    add_config_flags,
    check_beam_args,
    config_values,
    parser_flags,
    storage_option_parser,
    unknown_message,
)
from petseg.training.config import ConfigError, TrainConfig

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


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """``train.py`` and ``petseg train``: trains and exports; ``... evaluate`` scores an export.

    Returns:
      The exit status: 0 exported, 2 a bad flag, configuration or data.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:
        from petseg.evaluate import main as evaluate_main

        return evaluate_main(argv[1:], prog=f"{prog} evaluate")
    parser = build_parser(prog)
    if argv and not argv[0].startswith("-"):
        # Training takes no positional argument: a leading word is a mistyped command.
        parser.error(unknown_message("command", argv[0], ["evaluate"]))
    args, storage_args = parser.parse_known_args(argv)
    try:
        if storage_args:
            storage = storage_option_parser(parser.prog)
            storage_flags = frozenset(parser_flags(storage))
            check_beam_args(storage_args, parser_flags(parser), known=storage_flags)
            # A stray word, a missing value: one line and exit 2, as for any flag.
            storage.parse_args(storage_args)
        config = TrainConfig(**config_values(TrainConfig, args))
    except (ConfigError, UnknownFlagError) as error:
        parser.error(str(error))
    if storage_args:
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions

        FileSystems.set_options(PipelineOptions(storage_args))

    import logging

    from petseg.serving.export import ExportError
    from petseg.training.data import DataSourceError
    from petseg.training.loop import train_and_evaluate
    from petseg.training.model import EncoderWeightsError

    # force: importing Beam (for a bucket workdir) may already have configured the root logger.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    try:
        result = train_and_evaluate(config, args.workdir)
    except (ConfigError, DataSourceError, EncoderWeightsError, ExportError) as error:
        # A user mistake: one line, no traceback, argparse's exit status.
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"exported {result.model_id} to {result.export_dir}")
    return 0
