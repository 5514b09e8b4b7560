"""A tiny training run as a command, and killing it hard once it has got far enough."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROZEN_EPOCHS, FINE_TUNE_EPOCHS = 2, 4
TRAIN_ARGS = [
    "--dataset=synthetic",
    "--synthetic-count=8",
    "--image-size=32",
    "--alpha=0.35",
    "--encoder-weights=none",
    "--batch-size=4",
    "--steps-per-epoch=3",
    f"--epochs={FROZEN_EPOCHS}",
    f"--fine-tune-epochs={FINE_TUNE_EPOCHS}",
    "--plot-examples=1",
]
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_command(*flags: str) -> list[str]:
    """``train.py`` with :data:`TRAIN_ARGS` and ``flags``."""
    return [sys.executable, os.path.join(REPO, "train.py"), *TRAIN_ARGS, *flags]


def kill_when(command: list[str], ready: Callable[[], bool], cwd: str, limit: float = 240) -> None:
    """Runs ``command`` and SIGKILLs it as soon as ``ready()``; fails if it ends first."""
    process = subprocess.Popen(
        command, cwd=cwd, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + limit
        while not ready():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "not ready to be killed within the time limit"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
