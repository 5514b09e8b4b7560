"""Segmentation throughput and memory: the model's own limit, the Beam job, a naive loop.

All segment the same generated JPEGs with the same export. Each round runs every
contender once, so drift in the machine's load hits all alike; figures are medians.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.common import (
    SMALL_SIZE,
    Sizes,
    bench_jpegs,
    child_usage,
    export_bench_model,
    fresh_folder,
    medians,
    rate,
)

# beam_jobs.segment's flags for DirectRunner's multi_processing mode with 2 workers.
TWO_PROCESSES = ("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")


def model_call(export_dir: str) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """The job's own model call (``ServingModel.probabilities``) on an export's SavedModel,
    and its side."""
    from petseg.beam.inference import ServingModel
    from petseg.serving.backends import load_runtime

    runtime, info = load_runtime(export_dir, "tensorflow")
    return ServingModel(runtime, info.model_id, info.image_size).probabilities, info.image_size


def serving_rate(call, image_size: int, batch_size: int, calls: int) -> dict[str, float]:
    """:func:`benchmarks.common.rate` of ``call`` on one random uint8 batch, taken from host
    memory with the probabilities returned there, as the job's call does."""
    shape = (batch_size, image_size, image_size, 3)
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    return rate(lambda: call(batch), batch_size, calls)


@dataclass(frozen=True)
class Job:
    """``beam_jobs.segment`` as the benchmarks run it, each run into a fresh OUT under
    ``workdir`` that is removed afterwards."""

    export_dir: str
    workdir: str
    batch_size: int
    beam_flags: tuple[str, ...] = ()

    def flags(self, input_dir: str, output: str) -> list[str]:
        """The job's flags for one run, Beam's included, progress lines off."""
        return [
            *("--input", input_dir, "--model", self.export_dir, "--output", output),
            *("--max-batch-size", str(self.batch_size), "--progress-interval", "0"),
            *self.beam_flags,
        ]

    def seconds(self, input_dir: str, count: int) -> float:
        """Seconds from submitting the job in this process to its summary."""
        from beam_jobs import segment

        with fresh_folder(self.workdir, "out-") as output:
            started = time.perf_counter()
            summary = segment.run(self.flags(input_dir, output))
            seconds = time.perf_counter() - started
        check_summary(summary, count)
        return seconds

    def round(self, folder: str, count: int, one_batch: str) -> dict[str, float]:
        """The job on ``one_batch`` (``n = batch_size`` images), then on ``count`` (N): images/s
        end to end, the steady rate ``(N - n) / (t_N - t_n)``, the one-batch run's seconds."""
        small = self.seconds(one_batch, self.batch_size)
        seconds = self.seconds(folder, count)
        return {
            "images_per_second": count / seconds,
            "steady_images_per_second": (count - self.batch_size) / (seconds - small),
            "one_batch_seconds": small,
        }

    def memory(self, input_dir: str, count: int) -> dict[str, float]:
        """The job as a command in a fresh process: :func:`benchmarks.common.child_usage`
        and the images/s of its summary (from submitting the pipeline to its end)."""
        from petseg.beam.layout import SUMMARY_FILE
        from petseg.beam.write import read_json

        with fresh_folder(self.workdir, "rss-") as output:
            command = [sys.executable, "-m", "beam_jobs.segment", *self.flags(input_dir, output)]
            usage = child_usage(command)
            summary = read_json(os.path.join(output, SUMMARY_FILE))
        check_summary(summary, count)
        return {**usage, "images_per_second": float(summary["images_per_second"])}


def check_summary(summary: dict, count: int) -> None:
    """Raises ``RuntimeError`` unless the job inferred a mask for each of ``count`` images."""
    inferred = summary["masks_written"] - summary["masks_reused"]
    if inferred != count:
        reused = summary["masks_reused"]
        raise RuntimeError(f"the job inferred {inferred} masks of {count} ({reused} reused)")


def naive_loop(export_dir: str, paths: list[str], workdir: str) -> Callable[[], dict[str, float]]:
    """A round of what a tutorial user writes: per file, decode, resize, ``model.predict``
    on one image, argmax, save a PNG. The Keras model loads once, here."""
    import keras
    import tensorflow as tf
    from PIL import Image

    from petseg.serving.export import KERAS_FILE

    model = keras.models.load_model(os.path.join(export_dir, KERAS_FILE), compile=False)
    size = int(model.input_shape[1])

    def one_round() -> dict[str, float]:
        with fresh_folder(workdir, "naive-") as output:
            started = time.perf_counter()
            for path in paths:
                image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
                image = tf.image.resize(image, (size, size))
                logits = model.predict(image[tf.newaxis, ...], verbose=0)
                mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
                name = os.path.splitext(os.path.basename(path))[0] + ".png"
                Image.fromarray(mask).save(os.path.join(output, name))
            return {"images_per_second": len(paths) / (time.perf_counter() - started)}

    return one_round


def measure(export_dir: str, workdir: str, sizes: Sizes) -> dict:
    """Every segmentation figure for ``sizes.images`` (N) JPEGs: medians and runs of
    ``model_limit`` (the job's model call on one pre-resized batch, no I/O), the job in
    process (also with ``--coco``) and in 2 processes (:meth:`Job.round`) and ``naive_loop`` (on a quarter of
    the images, at least 20); ``memory_N`` and ``memory_5N`` (:meth:`Job.memory`, once)."""
    folder, paths = bench_jpegs(workdir, sizes.images)
    one_batch, _ = bench_jpegs(workdir, sizes.batch_size)
    call, size = model_call(export_dir)
    naive = naive_loop(export_dir, paths[: max(20, sizes.images // 4)], workdir)
    jobs = {
        "job_in_process": Job(export_dir, workdir, sizes.batch_size),
        # The same, writing COCO too (its records re-read each committed mask).
        "job_in_process_coco": Job(export_dir, workdir, sizes.batch_size, ("--coco",)),
        "job_multi_processing_2": Job(export_dir, workdir, sizes.batch_size, TWO_PROCESSES),
    }
    runs: dict[str, list] = {"model_limit": [], **{name: [] for name in jobs}, "naive_loop": []}
    for round_number in range(sizes.repeats):
        calls = sizes.images // sizes.batch_size + 1
        runs["model_limit"].append(serving_rate(call, size, sizes.batch_size, calls))
        for name, job in jobs.items():
            runs[name].append(job.round(folder, sizes.images, one_batch))
        runs["naive_loop"].append(naive())
        rates = [f"{name} {values[-1]['images_per_second']:.1f}" for name, values in runs.items()]
        print(f"  round {round_number + 1}: {', '.join(rates)} images/s", flush=True)
    result = {name: medians(values) for name, values in runs.items()}
    result["memory_N"] = jobs["job_in_process"].memory(folder, sizes.images)
    large, _ = bench_jpegs(workdir, 5 * sizes.images)
    result["memory_5N"] = jobs["job_in_process"].memory(large, 5 * sizes.images)
    return result


def scale(workdir: str, sizes: Sizes) -> dict:
    """The job's own cost at scale: a near-free model (64 px, alpha 0.35) over
    ``sizes.small_images`` (N), then 10N, JPEGs of 96 x 72 in folders of 100, each
    run as a command (:meth:`Job.memory`). The marginal wall and CPU ms per image,
    ``(t_10N - t_N) / 9N``, leave start-up out; less the model's own CPU per image,
    they give the job's CPU outside the model. Medians, runs, seconds and peak RSS."""
    export_dir = export_bench_model(workdir, Sizes(image_size=64, alpha=0.35))
    counts = {"N": sizes.small_images, "10N": 10 * sizes.small_images}
    folders = {key: bench_jpegs(workdir, n, SMALL_SIZE, 100)[0] for key, n in counts.items()}
    job, (call, size) = Job(export_dir, workdir, sizes.batch_size), model_call(export_dir)
    runs = []
    for _ in range(sizes.repeats):
        use = {key: job.memory(folders[key], n) for key, n in counts.items()}
        run = {
            f"{name}_{key}": use[key][figure]
            for key in counts
            for name, figure in (("seconds", "wall_seconds"), ("peak_rss_mib", "peak_rss_mib"))
        }
        for name, figure in (("marginal_ms", "wall_seconds"), ("marginal_cpu_ms", "cpu_seconds")):
            extra = use["10N"][figure] - use["N"][figure]
            run[f"{name}_per_image"] = 1000 * extra / (9 * counts["N"])
        model = serving_rate(call, size, sizes.batch_size, 20)
        runs.append({**run, "model_cpu_ms_per_image": model["cpu_ms_per_image"]})
        print(f"  scale, small images: {run['marginal_ms_per_image']:.2f} ms each", flush=True)
    result = medians(runs)
    outside = result["marginal_cpu_ms_per_image"] - result["model_cpu_ms_per_image"]
    return {**result, "outside_model_cpu_ms_per_image": outside}
