"""Segmentation throughput: the model's own limit, the Beam job, and a tutorial-style loop.

All three segment the same generated 500 x 375 JPEGs with the same exported
model, in one process where possible, and each is repeated; medians are reported.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import median, peak_rss_mib, timed


def model_limit(export_dir: str, batch_size: int, batches: int, repeats: int) -> dict:
    """Images/s of the serving function on pre-decoded, pre-resized batches (no I/O)."""
    import tensorflow as tf

    from petseg.export import load_serving_model

    serve, info = load_serving_model(export_dir)
    rng = np.random.default_rng(0)
    batch = tf.constant(
        rng.integers(0, 256, (batch_size, info.image_size, info.image_size, 3), dtype=np.uint8)
    )
    serve(images=batch)  # trace and warm up
    rates = []
    for _ in range(repeats):
        seconds = timed(
            lambda: [serve(images=batch)["probabilities"].numpy() for _ in range(batches)]
        )
        rates.append(batch_size * batches / seconds)
    return {"images_per_second": median(rates), "runs": rates, "batch_size": batch_size}


def _job_flags(input_dir: str, export_dir: str, output: str) -> list[str]:
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


def job(input_dir: str, export_dir: str, count: int, repeats: int, extra: list[str]) -> dict:
    """Images/s of ``beam_jobs.segment`` end to end (wall time from submit to summary)."""
    from beam_jobs import segment

    rates = []
    for _ in range(repeats):
        output = tempfile.mkdtemp(prefix="petseg-bench-out-")
        try:
            started = time.perf_counter()
            summary = segment.run([*_job_flags(input_dir, export_dir, output), *extra])
            seconds = time.perf_counter() - started
        finally:
            shutil.rmtree(output, ignore_errors=True)
        if summary["masks_written"] != count:
            raise RuntimeError(f"job wrote {summary['masks_written']} masks of {count}")
        rates.append(count / seconds)
    return {"images_per_second": median(rates), "runs": rates, "flags": extra}


def naive_loop(paths: list[str], export_dir: str, repeats: int) -> dict:
    """What a tutorial user writes: per file, decode, ``model.predict`` one image, save a PNG."""
    import keras
    import tensorflow as tf
    from PIL import Image

    model = keras.models.load_model(os.path.join(export_dir, "model.keras"))
    size = int(model.input_shape[1])
    rates = []
    for _ in range(repeats):
        output = tempfile.mkdtemp(prefix="petseg-bench-naive-")
        try:
            started = time.perf_counter()
            for path in paths:
                image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
                image = tf.image.resize(image, (size, size))
                logits = model.predict(image[tf.newaxis, ...], verbose=0)
                mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
                name = os.path.splitext(os.path.basename(path))[0] + ".png"
                Image.fromarray(mask).save(os.path.join(output, name))
            rates.append(len(paths) / (time.perf_counter() - started))
        finally:
            shutil.rmtree(output, ignore_errors=True)
    return {"images_per_second": median(rates), "runs": rates}


def job_peak_memory(input_dir: str, export_dir: str) -> float:
    """Peak resident MiB of the in-process DirectRunner job over ``input_dir``."""
    output = tempfile.mkdtemp(prefix="petseg-bench-rss-")
    try:
        mib, _ = peak_rss_mib(
            [sys.executable, "-m", "beam_jobs.segment", *_job_flags(input_dir, export_dir, output)]
        )
    finally:
        shutil.rmtree(output, ignore_errors=True)
    return mib
