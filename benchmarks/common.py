"""What every benchmark needs: inputs generated alike, a model, medians, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

# The median Oxford-IIIT Pet image is 500 x 375.
OXFORD_MEDIAN_SIZE = (500, 375)
# make bench's segmentation model.
BENCH_IMAGE_SIZE = 128
BENCH_ALPHA = 1.0


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def write_jpegs(folder: str, count: int, size: tuple[int, int] = OXFORD_MEDIAN_SIZE) -> list[str]:
    """``count`` photo-like JPEGs (smooth shapes plus grain), deterministic, in ``folder``."""
    from petseg.data import synthetic_example

    os.makedirs(folder, exist_ok=True)
    width, height = size
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"photo_{index:06d}.jpg")
        paths.append(path)
        if os.path.exists(path):
            continue
        image, _ = synthetic_example(index, 256, seed=11)
        photo = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        grain = np.random.default_rng(index).normal(0, 6, (height, width, 3))
        pixels = np.clip(np.asarray(photo, np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return paths


def bench_jpegs(workdir: str, count: int) -> tuple[str, list[str]]:
    """The folder ``workdir/jpegs-<count>`` of :func:`write_jpegs`, and its paths."""
    folder = os.path.join(workdir, f"jpegs-{count}")
    return folder, write_jpegs(folder, count)


def export_bench_model(workdir: str, image_size: int, alpha: float) -> str:
    """A U-Net of the asked size, exported by train.py's code to ``workdir/model-<size>-<alpha>``
    (once; later calls reuse it), giving masks of the real kind.

    Throughput does not depend on the weights, but the masks' PNG encoding
    does: an untrained model gives per-pixel noise, several times slower to
    encode than the smooth regions of a trained model's masks, and a model
    trained from random init on a few images predicts background everywhere,
    which encodes in no time. So with the ImageNet encoder weights at hand
    (``PETSEG_ENCODER_WEIGHTS``, alpha 1.0) the model trains for 32 steps on
    synthetic pets, like the benchmark's JPEGs; without them it gets one step
    from random init, and ``petseg.json`` says so (``bench_model``).
    """
    from petseg.beam.write import write_json
    from petseg.config import TrainConfig
    from petseg.export import METADATA_FILE, read_model_info
    from petseg.training import train_and_evaluate

    export_dir = os.path.join(workdir, f"model-{image_size}-{alpha}")
    if os.path.exists(os.path.join(export_dir, METADATA_FILE)):
        # An export from before serving folded its batch normalizations loads slower.
        if read_model_info(export_dir).metadata.get("batch_norm_folded"):
            return export_dir
        shutil.rmtree(export_dir)
    weights = os.environ.get("PETSEG_ENCODER_WEIGHTS", "")
    trained = alpha == 1.0 and os.path.isfile(weights)
    config = TrainConfig(
        dataset="synthetic",
        synthetic_count=64,
        image_size=image_size,
        alpha=alpha,
        encoder_weights=weights if trained else "none",
        batch_size=16,
        epochs=8 if trained else 1,
        steps_per_epoch=4 if trained else 1,
        validation_freq=8,
        plot_examples=0,
    )
    workdir = export_dir + "-training"
    result = train_and_evaluate(config, workdir)
    shutil.copytree(result.export_dir, export_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    metadata = read_model_info(export_dir).metadata
    metadata["bench_model"] = (
        "32 steps from the ImageNet encoder" if trained else "1 step from random init"
    )
    write_json(os.path.join(export_dir, METADATA_FILE), metadata)
    return export_dir


def peak_rss_mib(argv: list[str]) -> tuple[float, float]:
    """Runs ``argv`` in a fresh child and returns ``(peak resident MiB, seconds)``.

    The child is a small wrapper that waits for the command and reports the
    largest resident set among its own children, so each measurement starts
    from a clean slate.
    """
    wrapper = (
        "import resource, subprocess, sys; "
        "code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr[-2000:]}")
    kib = int(result.stdout.strip().splitlines()[-1])
    return kib / 1024.0, seconds


def own_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict[str, object]:
    """The machine a result was measured on."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            models = [
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            ]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }
