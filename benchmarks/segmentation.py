"""Segmentation throughput: the model's own limit, the Beam job, and a tutorial-style loop.

All of them segment the same generated 500 x 375 JPEGs with the same exported
model, in one process where possible. :func:`compare` runs each once per
round and repeats the rounds, so drift in the machine's load hits all alike;
medians are reported.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import median, peak_rss_mib, timed


class ModelLimit:
    """The exported serving function on one pre-decoded, pre-resized batch: no I/O at all."""

    def __init__(self, export_dir: str, batch_size: int, batches: int):
        import tensorflow as tf

        from petseg.export import load_serving_model

        self._serve, info = load_serving_model(export_dir)
        rng = np.random.default_rng(0)
        self._batch = tf.constant(
            rng.integers(0, 256, (batch_size, info.image_size, info.image_size, 3), dtype=np.uint8)
        )
        self._batches = batches
        self._serve(images=self._batch)  # trace and warm up

    def images_per_second(self) -> float:
        seconds = timed(
            lambda: [
                self._serve(images=self._batch)["probabilities"].numpy()
                for _ in range(self._batches)
            ]
        )
        return int(self._batch.shape[0]) * self._batches / seconds


def job_flags(input_dir: str, export_dir: str, output: str) -> list[str]:
    """``beam_jobs.segment``'s flags for one benchmark run, progress lines off."""
    return [
        "--input",
        input_dir,
        "--model",
        export_dir,
        "--output",
        output,
        "--progress-interval",
        "0",
    ]


def job_seconds(
    input_dir: str, count: int, export_dir: str, workdir: str, extra: list[str]
) -> float:
    """Seconds from submitting ``beam_jobs.segment`` to its summary, outputs in ``workdir``."""
    from beam_jobs import segment

    output = tempfile.mkdtemp(prefix="out-", dir=workdir)
    try:
        started = time.perf_counter()
        summary = segment.run([*job_flags(input_dir, export_dir, output), *extra])
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(output, ignore_errors=True)
    if summary["masks_written"] != count:
        raise RuntimeError(f"job wrote {summary['masks_written']} masks of {count}")
    return seconds


def job_round(
    inputs: tuple[str, int],
    one_batch: tuple[str, int],
    export_dir: str,
    workdir: str,
    extra: list[str],
) -> dict[str, float]:
    """One run of the job on all N images and one on a single batch.

    The single batch's time is the job's fixed cost (building the pipeline,
    loading the model, the grouping steps); the difference between the two
    runs gives the rate at which images flow once the job is going:
    ``(N - n) / (t_N - t_n)``.
    """
    (folder, count), (small_folder, small_count) = inputs, one_batch
    small = job_seconds(small_folder, small_count, export_dir, workdir, extra)
    seconds = job_seconds(folder, count, export_dir, workdir, extra)
    return {
        "images_per_second": count / seconds,
        "steady_images_per_second": (count - small_count) / (seconds - small),
        "one_batch_seconds": small,
    }


class NaiveLoop:
    """What a tutorial user writes: per file, decode, ``model.predict`` one image, save a PNG."""

    def __init__(self, export_dir: str, paths: list[str], workdir: str):
        import keras

        import petseg.layers  # noqa: F401  (registers the model's layers with Keras)

        self._model = keras.models.load_model(os.path.join(export_dir, "model.keras"))
        self._size = int(self._model.input_shape[1])
        self._paths = paths
        self._workdir = workdir

    def images_per_second(self) -> float:
        import tensorflow as tf
        from PIL import Image

        output = tempfile.mkdtemp(prefix="naive-", dir=self._workdir)
        try:
            started = time.perf_counter()
            for path in self._paths:
                image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
                image = tf.image.resize(image, (self._size, self._size))
                logits = self._model.predict(image[tf.newaxis, ...], verbose=0)
                mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
                name = os.path.splitext(os.path.basename(path))[0] + ".png"
                Image.fromarray(mask).save(os.path.join(output, name))
            return len(self._paths) / (time.perf_counter() - started)
        finally:
            shutil.rmtree(output, ignore_errors=True)


def compare(
    export_dir: str,
    inputs: tuple[str, int],
    one_batch: tuple[str, int],
    naive_paths: list[str],
    workdir: str,
    batch_size: int,
    repeats: int,
) -> dict:
    """Model limit, the job in-process and with 2 worker processes, the naive loop; alternated."""
    limit = ModelLimit(export_dir, batch_size, max(2, inputs[1] // batch_size))
    naive = NaiveLoop(export_dir, naive_paths, workdir)
    flags = ["--max-batch-size", str(batch_size)]
    modes = {
        "job_in_process": flags,
        "job_multi_processing_2": [
            *flags,
            "--direct_running_mode",
            "multi_processing",
            "--direct_num_workers",
            "2",
        ],
    }
    runs: dict[str, list] = {"model_limit": [], "naive_loop": [], **{mode: [] for mode in modes}}
    for round_number in range(repeats):
        runs["model_limit"].append(limit.images_per_second())
        for mode, extra in modes.items():
            runs[mode].append(job_round(inputs, one_batch, export_dir, workdir, extra))
        runs["naive_loop"].append(naive.images_per_second())
        print(
            f"  round {round_number + 1}: limit {runs['model_limit'][-1]:.1f}, job "
            f"{runs['job_in_process'][-1]['images_per_second']:.1f} (steady "
            f"{runs['job_in_process'][-1]['steady_images_per_second']:.1f}), 2 processes "
            f"{runs['job_multi_processing_2'][-1]['images_per_second']:.1f}, naive "
            f"{runs['naive_loop'][-1]:.1f} images/s",
            flush=True,
        )
    result = {
        "model_limit": {
            "images_per_second": median(runs["model_limit"]),
            "runs": runs["model_limit"],
            "batch_size": batch_size,
        },
        "naive_loop": {
            "images_per_second": median(runs["naive_loop"]),
            "runs": runs["naive_loop"],
            "images": len(naive_paths),
        },
    }
    for mode, extra in modes.items():
        result[mode] = {
            key: median([run[key] for run in runs[mode]])
            for key in ("images_per_second", "steady_images_per_second", "one_batch_seconds")
        }
        result[mode]["runs"] = runs[mode]
        result[mode]["flags"] = extra
    return result


def job_peak_memory(input_dir: str, export_dir: str, workdir: str) -> tuple[float, float]:
    """Peak resident MiB of the in-process DirectRunner job over ``input_dir``, and its images/s.

    The rate is the one the job writes to its summary: from submitting the
    pipeline to its end (model load included, interpreter start-up not).
    """
    from beam_jobs.segment import SUMMARY_FILE
    from petseg.beam.write import read_json

    output = tempfile.mkdtemp(prefix="rss-", dir=workdir)
    try:
        mib, _ = peak_rss_mib(
            [sys.executable, "-m", "beam_jobs.segment", *job_flags(input_dir, export_dir, output)]
        )
        rate = float(read_json(os.path.join(output, SUMMARY_FILE))["images_per_second"])
    finally:
        shutil.rmtree(output, ignore_errors=True)
    return mib, rate
