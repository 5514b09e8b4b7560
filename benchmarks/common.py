"""What the benchmarks share: generated photos, the bench model, fresh folders, results files."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The median Oxford-IIIT Pet image is 500 x 375.
OXFORD_MEDIAN_SIZE = (500, 375)
WORKDIR = os.path.join("runs", "bench")
RESULTS_DIR = os.path.join("benchmarks", "results")


@dataclass(frozen=True)
class Sizes:
    """What a benchmark run measures on."""

    images: int = 1000  # N, the JPEGs the job segments (its memory also at 5N)
    repeats: int = 3  # rounds of every throughput measurement, reported as medians
    image_size: int = 128  # the segmentation model's side
    alpha: float = 1.0  # the MobileNetV2 width of every model
    batch_size: int = 32  # the job's and the model limit's inference batch
    train_size: int = 128  # the training benchmark's image side
    warmup_steps: int = 5  # training steps before the timed ones
    train_steps: int = 10  # training steps timed
    accuracy_epochs: int = 20  # each recipe's epochs before comparing accuracy (0: none)
    small_images: int = 2000  # the scale case's small JPEGs (also 10x as many)


# Every measurement once on tiny sizes: checks that all of it runs.
QUICK = Sizes(16, 1, 64, 0.35, 8, 64, 1, 2, 0, 16)
# The scale case's photos: small, so the job's own cost per image dominates.
SMALL_SIZE = (96, 72)


def parse_args(argv: list[str] | None, prog: str, results: str, **switches: str):
    """A benchmark command's flags: ``--out`` (the folder for ``results``.json and .md),
    ``--workdir``, ``--quick`` and each of ``switches`` (name: help), and ``sizes``, the
    :class:`Sizes` that ``--quick`` chooses."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", allow_abbrev=False)
    parser.add_argument("--out", default=RESULTS_DIR, help=f"folder for {results}.json and .md")
    parser.add_argument("--workdir", default=WORKDIR, help="photos, models and jobs' outputs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    for name, text in switches.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=text)
    args = parser.parse_args(argv)
    args.sizes = QUICK if args.quick else Sizes()
    return args


def medians(runs: list[dict[str, float]]) -> dict:
    """Each figure's median over ``runs`` (dicts of the same keys), and the runs themselves."""
    return {**{key: statistics.median(run[key] for run in runs) for key in runs[0]}, "runs": runs}


def rate(step: Callable[[], object], items: int, calls: int) -> dict[str, float]:
    """Images/s and CPU ms per image of ``calls`` calls of ``step`` on ``items`` images
    each, after one untimed call (which traces and warms up)."""
    step()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        step()
    count = items * calls
    return {
        "images_per_second": count / (time.perf_counter() - started),
        "cpu_ms_per_image": 1000 * (time.process_time() - cpu) / count,
    }


def bench_jpegs(
    workdir: str, count: int, size: tuple[int, int] = OXFORD_MEDIAN_SIZE, per_folder: int = 0
) -> tuple[str, list[str]]:
    """A folder under ``workdir`` of ``count`` photo-like JPEGs of ``size`` (a synthetic
    pet with grain, the same for the same index; files already there are kept), and their
    paths; with ``per_folder``, in subfolders of that many each, as in a bucket."""
    from petseg.training.data import synthetic_example

    width, height = size
    name = f"jpegs-{count}" if size == OXFORD_MEDIAN_SIZE else f"jpegs-{width}x{height}-{count}"
    folder = os.path.join(workdir, name + (f"-by-{per_folder}" if per_folder else ""))
    paths = [
        os.path.join(
            folder,
            f"part_{index // per_folder:04d}" if per_folder else "",
            f"photo_{index:06d}.jpg",
        )
        for index in range(count)
    ]
    for index, path in enumerate(paths):
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image, _ = synthetic_example(index, 256, seed=11)
            photo = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
            grain = np.random.default_rng(index).normal(0, 6, (height, width, 3))
            pixels = np.clip(np.asarray(photo, np.float32) + grain, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
    return folder, paths


def export_bench_model(workdir: str, sizes: Sizes) -> str:
    """The folder ``workdir/model-<size>-<alpha>`` of ``sizes``' segmentation model, trained
    and exported by ``petseg.training.loop`` if absent: 32 steps on synthetic pets from the
    ImageNet encoder (``PETSEG_ENCODER_WEIGHTS``, alpha 1.0), else one step from random
    init, as ``petseg.json``'s ``bench_model`` says."""
    from petseg.beam.write import write_json
    from petseg.serving.export import METADATA_FILE, read_model_info
    from petseg.training.config import TrainConfig
    from petseg.training.loop import train_and_evaluate

    image_size, alpha = sizes.image_size, sizes.alpha
    export_dir = os.path.join(workdir, f"model-{image_size}-{alpha}")
    if os.path.exists(os.path.join(export_dir, METADATA_FILE)):
        return export_dir
    weights = os.environ.get("PETSEG_ENCODER_WEIGHTS", "")
    trained = alpha == 1.0 and os.path.isfile(weights)
    config = TrainConfig(
        dataset="synthetic",
        image_size=image_size,
        alpha=alpha,
        encoder_weights=weights if trained else "none",
        batch_size=16,
        epochs=8 if trained else 1,
        steps_per_epoch=4 if trained else 1,
        validation_freq=8,
        plot_examples=0,
    )
    with fresh_folder(workdir, "training-") as training_dir:
        shutil.copytree(train_and_evaluate(config, training_dir).export_dir, export_dir)
    metadata = read_model_info(export_dir).metadata
    metadata["bench_model"] = (
        "32 steps from the ImageNet encoder" if trained else "1 step from random init"
    )
    write_json(os.path.join(export_dir, METADATA_FILE), metadata)
    return export_dir


def fresh_folder(parent: str, prefix: str) -> tempfile.TemporaryDirectory:
    """A new empty folder under ``parent``, removed with all it holds when the block ends."""
    os.makedirs(parent, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=parent, ignore_cleanup_errors=True)


def child_usage(argv: list[str]) -> dict[str, float]:
    """Runs ``argv`` in a fresh child: its peak resident MiB, CPU and wall seconds, or
    ``RuntimeError`` if it fails. A wrapper process runs the command and reports its own
    children's peak and CPU time (worker processes included), so nothing earlier counts."""
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "use = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(use.ru_maxrss, use.ru_utime + use.ru_stime); sys.exit(code)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    rss, cpu = done.stdout.strip().splitlines()[-1].split()
    return {"peak_rss_mib": int(rss) / 1024.0, "cpu_seconds": float(cpu), "wall_seconds": wall}


def table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    """A Markdown table, short rows filled with empty cells, then an empty line; every
    column but the first aligns right."""
    rule = ("---", *["---:"] * (len(header) - 1))
    lines = [line + ("",) * (len(header) - len(line)) for line in (header, rule, *rows)]
    return ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines] + [""]


def write_results(out: str, name: str, results: dict, lines: list[str]) -> None:
    """Writes ``results`` to ``out/<name>.json`` and ``lines`` to ``out/<name>.md``, each
    with the date and the machine, and prints the latter."""
    import tensorflow as tf

    from petseg.beam.write import write_atomically, write_json

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as file:
        names = (line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
        cpu = next(names, cpu)
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    machine = {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus}
    machine.update(python=platform.python_version(), tensorflow=tf.__version__)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = ", ".join(f"{key} {value}" for key, value in machine.items())
    text = "\n".join([f"Measured {date}: {where}.", "", *lines])
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, f"{name}.json"), {"date": date, "machine": machine, **results})
    write_atomically(os.path.join(out, f"{name}.md"), text.encode())
    print("\n" + text, flush=True)
