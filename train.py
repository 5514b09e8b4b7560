"""Trains the pet segmentation U-Net on every visible GPU and exports it for serving.

The tutorial's recipe (TFDS download, 128 px, 20 epochs)::

    python train.py --dataset oxford_iiit_pet --epochs 20 --workdir runs/tutorial

An unpacked Oxford-IIIT Pet folder (trainval.txt to train, test.txt to evaluate)::

    python train.py --data-dir ~/data/oxford-iiit-pet --encoder-weights imagenet \\
        --image-size 224 --epochs 20 --fine-tune-epochs 20 --workdir runs/pets

Score an export at the images' original resolution::

    python train.py evaluate --model runs/pets/export --data-dir ~/data/oxford-iiit-pet

Flags go into one frozen ``petseg.config.TrainConfig``; all logic lives in
``petseg.training.train_and_evaluate(config, workdir)``. See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from petseg.config import (  # noqa: E402
    DATASETS,
    PRECISIONS,
    ConfigError,
    TrainConfig,
    parse_class_weights,
)
from petseg.flags import StrictArgumentParser, unknown_message  # noqa: E402

PROG = "train.py"
# Read from the dataclass, not an instance: --help then answers without loading TensorFlow.
DEFAULTS = argparse.Namespace(
    **{field.name: field.default for field in dataclasses.fields(TrainConfig)}
)


def build_parser() -> argparse.ArgumentParser:
    """Every training flag, with the config's defaults."""
    parser = StrictArgumentParser(
        prog=PROG,
        description="Train the MobileNetV2 U-Net (MirroredStrategy over all visible GPUs) and "
        "export it to WORKDIR/export. 'train.py evaluate --help' scores an export.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default=DEFAULTS.dataset, help="data set")
    data.add_argument(
        "--data-dir",
        help="Oxford-IIIT Pet folder (images/, annotations/trimaps/, trainval.txt, test.txt) "
        "instead of the TFDS download",
    )
    data.add_argument("--tfds-data-dir", help="TFDS data directory (default: TFDS's own)")
    data.add_argument("--images-dir", help="paired folder of images (with --masks-dir)")
    data.add_argument("--masks-dir", help="masks matching --images-dir by file stem")
    data.add_argument(
        "--mask-values",
        default=DEFAULTS.mask_values,
        help="stored mask value -> class index for --masks-dir (0 pet, 1 background, 2 border)",
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULTS.val_fraction,
        help="share of paired examples held out for evaluation",
    )
    data.add_argument(
        "--synthetic-count",
        type=int,
        default=DEFAULTS.synthetic_count,
        help="synthetic training examples (evaluation: a quarter as many)",
    )
    data.add_argument(
        "--strict", action="store_true", help="read every file first; refuse bad pairs"
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--image-size", type=int, default=DEFAULTS.image_size, help="input side, multiple of 32"
    )
    model.add_argument(
        "--alpha", type=float, default=DEFAULTS.alpha, help="MobileNetV2 width multiplier"
    )
    model.add_argument(
        "--encoder-weights",
        default=DEFAULTS.encoder_weights,
        metavar="{imagenet,none,PATH}",
        help="encoder initialisation: Keras' ImageNet download, random, or a local .h5 file",
    )
    model.add_argument("--dropout", type=float, default=DEFAULTS.dropout, help="decoder dropout")
    model.add_argument(
        "--serve-image-size",
        type=int,
        default=DEFAULTS.serve_image_size,
        help="input side of the exported model (default: --image-size); a multiple of 32",
    )
    model.add_argument(
        "--tta-flip",
        action="store_true",
        help="the exported model averages each image with its mirror image (2x inference cost)",
    )

    schedule = parser.add_argument_group("optimisation")
    schedule.add_argument(
        "--epochs", type=int, default=DEFAULTS.epochs, help="epochs with the encoder frozen"
    )
    schedule.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=DEFAULTS.fine_tune_epochs,
        help="further epochs with the encoder unfrozen (numbering continues)",
    )
    schedule.add_argument(
        "--fine-tune-from",
        metavar="LAYER",
        help="first encoder layer to unfreeze, e.g. block_13_expand (default: all)",
    )
    schedule.add_argument(
        "--learning-rate", type=float, default=DEFAULTS.learning_rate, help="Adam, frozen phase"
    )
    schedule.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=DEFAULTS.fine_tune_learning_rate,
        help="Adam, fine-tuning phase",
    )
    schedule.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default=DEFAULTS.lr_schedule,
        help="constant, or cosine decay to 0 within each phase",
    )
    schedule.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help="examples per replica; the global batch is this x replicas",
    )
    schedule.add_argument(
        "--global-batch-size",
        type=int,
        help="global batch instead of --batch-size; must divide by the replicas",
    )
    schedule.add_argument(
        "--steps-per-epoch",
        type=int,
        help="training steps per epoch (default: training examples // global batch)",
    )
    schedule.add_argument(
        "--class-weights",
        metavar="w0,w1,w2",
        help="per-pixel loss weights of pet,background,border (default: none)",
    )
    schedule.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed")

    augment = parser.add_argument_group("augmentation")
    augment.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.flip,
        help="random horizontal flips",
    )
    augment.add_argument(
        "--min-crop-scale",
        type=float,
        default=DEFAULTS.min_crop_scale,
        help="random square crops of at least this fraction of the side, resized back (1: off)",
    )
    augment.add_argument(
        "--colour-jitter",
        "--color-jitter",
        type=float,
        default=DEFAULTS.colour_jitter,
        help="brightness/contrast/saturation jitter strength in [0, 1] (0: off)",
    )
    augment.add_argument(
        "--shuffle-buffer", type=int, default=DEFAULTS.shuffle_buffer, help="examples"
    )

    devices = parser.add_argument_group("devices and outputs")
    devices.add_argument(
        "--gpus",
        help="GPUs to mirror over: a count (2; 0 = CPU) or indices (0,1); default: all visible",
    )
    devices.add_argument(
        "--mixed-precision",
        nargs="?",
        const="on",
        default=DEFAULTS.mixed_precision,
        choices=PRECISIONS,
        help="float16 (GPU) / bfloat16 (CPU) compute with float32 weights: auto "
        "where the hardware computes it natively; on (the flag alone); off",
    )
    devices.add_argument(
        "--validation-freq",
        type=int,
        default=DEFAULTS.validation_freq,
        help="evaluate on the full evaluation split every N epochs",
    )
    devices.add_argument(
        "--plot-examples",
        type=int,
        default=DEFAULTS.plot_examples,
        help="validation images in each epoch's prediction panel",
    )
    add(
        "--workdir",
        default="runs/train",
        help="outputs: checkpoints, backup (resume), logs, plots, export",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The frozen config the parsed flags describe.

    Raises:
      ConfigError: an invalid value.
    """
    values = {key: value for key, value in vars(args).items() if key != "workdir"}
    if values["class_weights"] is not None:
        values["class_weights"] = parse_class_weights(values["class_weights"])
    return TrainConfig.from_dict(values)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``petseg-train``; ``train.py evaluate ...`` scores an export."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:
        from petseg.evaluate import main as evaluate_main

        return evaluate_main(argv[1:], prog=f"{PROG} evaluate")
    parser = build_parser()
    if argv and not argv[0].startswith("-"):
        # Training takes no positional argument: a leading word is a mistyped command.
        parser.error(unknown_message("command", argv[0], ["evaluate"]))
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from petseg.data import DataSourceError
    from petseg.export import ExportError
    from petseg.model import EncoderWeightsError
    from petseg.training import train_and_evaluate

    try:
        result = train_and_evaluate(config, args.workdir)
    except (ConfigError, DataSourceError, EncoderWeightsError, ExportError) as error:
        # A user mistake: one line, no traceback, argparse's exit status.
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(f"exported {result.model_id} to {result.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
