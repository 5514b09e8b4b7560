"""``make profile``: where the segmentation job's time goes.

python -m benchmarks.profile [--out benchmarks/results] [--workdir runs/bench] [--quick]

Runs ``beam_jobs.segment`` in process on ``make bench``'s N photos and model, probed
(:func:`profile_job`), then without the model's compute, then the model's call alone.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from unittest import mock

import numpy as np

from benchmarks import common
from benchmarks.segmentation import Job, model_call, serving_rate


def _steps(cls: type) -> Iterator[type]:
    """Every subclass of ``cls`` below it that defines its own ``work``."""
    for subclass in cls.__subclasses__():
        if "work" in vars(subclass):
            yield subclass
        yield from _steps(subclass)


def profile_job(job: Job, folder: str, count: int, replay_model: bool) -> dict:
    """One probed in-process run of ``job`` on the ``count`` images in ``folder``: every
    threaded step's ``work`` adds its thread's CPU time to its class's count, every model
    call records its start and end; with ``replay_model`` the model computes once and
    later calls return that answer. Raises ``RuntimeError`` if no model call was made."""
    from beam_jobs import segment
    from petseg.beam.inference import ServingModel
    from petseg.beam.threaded import ThreadedDoFn

    cpu_seconds: collections.Counter = collections.Counter()
    calls: list[tuple[float, float]] = []
    lock = threading.Lock()
    probabilities = ServingModel.probabilities
    first: list[np.ndarray] = []
    computed = 0

    def timed_work(work, name: str):
        def timed(self, element):
            started = time.thread_time()
            try:
                return work(self, element)
            finally:
                with lock:
                    cpu_seconds[name] += time.thread_time() - started

        return timed

    def timed_call(self, images: np.ndarray) -> np.ndarray:
        nonlocal computed
        started = time.perf_counter()
        try:
            if not replay_model:
                computed += 1
                return probabilities(self, images)
            # Every batch runs at one fixed shape, so the first answer fits every call.
            if not first:
                computed += 1
                first.append(probabilities(self, images))
            return first[0].copy()
        finally:
            calls.append((started, time.perf_counter()))

    with contextlib.ExitStack() as stack:
        for step in _steps(ThreadedDoFn):
            probe = timed_work(step.work, step.__name__)
            stack.enter_context(mock.patch.object(step, "work", probe))
        stack.enter_context(mock.patch.object(ServingModel, "probabilities", timed_call))
        out = stack.enter_context(common.fresh_folder(job.workdir, "prof-"))
        started, cpu = time.perf_counter(), time.process_time()
        segment.run(job.flags(folder, out))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if not calls:
        raise RuntimeError("the job made no model call: no images to profile")
    durations = [end - start for start, end in calls]
    return {
        "images_per_second": count / wall,
        "wall_seconds": wall,
        "process_cpu_ms_per_image": 1000 * cpu / count,
        "step_cpu_ms_per_image": {name: 1000 * s / count for name, s in cpu_seconds.items()},
        "model_calls": len(calls),
        "model_computations": computed,
        "model_call_ms_median": 1000 * float(np.median(durations)),
        "model_seconds": float(sum(durations)),
        "between_calls_seconds": sum(b[0] - a[1] for a, b in itertools.pairwise(calls)),
        "before_first_call_seconds": calls[0][0] - started,
        "after_last_call_seconds": started + wall - calls[-1][1],
    }


def markdown(result: dict) -> list[str]:
    """Each run's CPU per image by step, and the model's calls."""
    job, alone = result["job"], result["model_alone"]
    alone_ms = 1000 * result["sizes"]["batch_size"] / alone["images_per_second"]
    runs = (job, result["without_model"])
    rows = [
        (f"`{step}`", *(f"{run['step_cpu_ms_per_image'].get(step, 0):.2f}" for run in runs))
        for step in sorted(job["step_cpu_ms_per_image"])
    ]
    totals = ("process_cpu_ms_per_image", "wall_seconds", "images_per_second")
    rows += [(key, *(f"{run[key]:.2f}" for run in runs)) for key in totals]
    return [
        f"{result['sizes']['images']} images, CPU ms per image:",
        "",
        *common.table(("", "the job", "the job without the model's compute"), rows),
        f"Model calls: {job['model_calls']}, median {job['model_call_ms_median']:.0f} ms in the "
        f"job, {alone_ms:.0f} ms alone ({alone['images_per_second']:.1f} images/s, "
        f"{alone['cpu_ms_per_image']:.1f} CPU ms per image); {job['model_seconds']:.1f} s in "
        f"calls, {job['between_calls_seconds']:.1f} s between them, "
        f"{job['before_first_call_seconds']:.1f} s before the first, "
        f"{job['after_last_call_seconds']:.1f} s after the last.",
    ]


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(argv, "benchmarks.profile", "profile")
    sizes = args.sizes
    job = Job(common.export_bench_model(args.workdir, sizes), args.workdir, sizes.batch_size)
    folder, _ = common.bench_jpegs(args.workdir, sizes.images)
    result: dict = {"sizes": asdict(sizes)}
    for name, replay in (("job", False), ("without_model", True)):
        result[name] = profile_job(job, folder, sizes.images, replay)
    call, image_size = model_call(job.export_dir)
    result["model_alone"] = serving_rate(call, image_size, sizes.batch_size, 10)
    common.write_results(args.out, "profile", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
