"""Trains the pet segmentation U-Net on every visible GPU and exports it for serving.

The tutorial's recipe (TFDS download, 128 px, 20 epochs)::

    python train.py --dataset oxford_iiit_pet --epochs 20 --workdir runs/tutorial

An unpacked Oxford-IIIT Pet folder (trainval.txt to train, test.txt to evaluate)::

    python train.py --data-dir ~/data/oxford-iiit-pet --encoder-weights imagenet \\
        --image-size 224 --epochs 20 --fine-tune-epochs 20 --workdir runs/pets

Score an export at the images' original resolution::

    python train.py evaluate --model runs/pets/export --data-dir ~/data/oxford-iiit-pet

Flags go into one frozen ``petseg.training.config.TrainConfig`` (``petseg.cli.train``);
``petseg.training.loop.train_and_evaluate(config, workdir)`` does the rest. See
docs/training.md.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from petseg.cli import train as command  # noqa: E402
from petseg.cli.train import PROG, build_parser, parse_args  # noqa: E402


def run(argv: list[str] | None = None, prog: str = PROG):
    """Trains, evaluates and exports as the flags in ``argv`` say; returns the
    ``TrainingResult`` (the export's folder and model id, the test split's metrics)."""
    # Imported here: --help and a mistyped flag answer without loading TensorFlow.
    from petseg.training.loop import train_and_evaluate

    config, workdir = parse_args(argv, prog)
    return train_and_evaluate(config, workdir)


def main(argv: list[str] | None = None) -> int:
    """Runs training (or ``evaluate``) and returns the command's exit status
    (``petseg.cli.train.main``)."""
    return command.main(argv, run=run)


__all__ = ["build_parser", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
