"""Trains the pet segmentation U-Net on every visible GPU and exports it for serving.

The tutorial's recipe (TFDS download, 128 px, 20 epochs)::

    python train.py --dataset oxford_iiit_pet --epochs 20 --workdir runs/tutorial

An unpacked Oxford-IIIT Pet folder (trainval.txt to train, test.txt to evaluate)::

    python train.py --data-dir ~/data/oxford-iiit-pet --encoder-weights imagenet \\
        --image-size 224 --epochs 20 --fine-tune-epochs 20 --workdir runs/pets

Score an export at the images' original resolution::

    python train.py evaluate --model runs/pets/export --data-dir ~/data/oxford-iiit-pet

Flags go into one frozen ``petseg.training.config.TrainConfig``; all logic lives in
``petseg.training.loop.train_and_evaluate(config, workdir)``. See docs/training.md.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from petseg.train_command import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
