"""Where the segmentation job's time goes: CPU per image of each step, and the model's calls.

python -m benchmarks.profile [--images 1000] [--workdir runs/bench]

Runs ``beam_jobs.segment`` once in-process on the benchmark's JPEGs and
model, with two probes: each threaded step's ``work`` records the CPU time
its thread spent per image, and the model handler records the wall time of
every model call and the gaps between calls. Then the same job runs again
with the model's compute taken out (every call returns the probabilities
the first call computed, so every later step does the same work): the cost
and the speed of the pipeline on its own. Printed as a table and written to
``OUT/profile.json``. The probes add a few microseconds per image.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from unittest import mock

from benchmarks import common
from benchmarks.segmentation import ModelLimit, job_flags


def _probe_work(
    probes: contextlib.ExitStack,
    classes,
    cpu_seconds: collections.Counter,
    lock: threading.Lock,
) -> None:
    for cls in classes:
        work = cls.work

        def timed_work(self, element, work=work, name=cls.__name__):
            started = time.thread_time()
            try:
                return work(self, element)
            finally:
                with lock:
                    cpu_seconds[name] += time.thread_time() - started

        probes.enter_context(mock.patch.object(cls, "work", timed_work))


def _probe_model(
    probes: contextlib.ExitStack, calls: list[tuple[float, float]], replay: bool
) -> None:
    from petseg.beam.inference import ServingModel

    probabilities = ServingModel.probabilities
    recorded = []

    def replayed(self, images):
        # Batches run at one fixed shape, so the first answer fits every later call.
        if not recorded:
            recorded.append(probabilities(self, images))
        return recorded[0].copy()

    model = replayed if replay else probabilities

    def timed(self, images):
        started = time.perf_counter()
        try:
            return model(self, images)
        finally:
            calls.append((started, time.perf_counter()))

    probes.enter_context(mock.patch.object(ServingModel, "probabilities", timed))


def profile_job(
    input_dir: str,
    count: int,
    export_dir: str,
    workdir: str,
    extra=(),
    replay_model: bool = False,
) -> dict:
    """One probed in-process run of the job; see the module docstring.

    With ``replay_model`` the model runs once and every later call returns
    that first answer: what the job costs without the model's compute.
    """
    import numpy as np

    from beam_jobs import segment
    from petseg.beam.decode import DecodeImageFn
    from petseg.beam.postprocess import PostprocessFn
    from petseg.beam.stats import ComputeImageStatsFn
    from petseg.beam.write import WriteMaskFn

    cpu_seconds: collections.Counter = collections.Counter()
    calls: list[tuple[float, float]] = []
    output = tempfile.mkdtemp(prefix="profile-", dir=workdir)
    # The probes come off again when the run ends, so the classes are left as found.
    with contextlib.ExitStack() as probes:
        probes.callback(shutil.rmtree, output, ignore_errors=True)
        _probe_work(
            probes,
            (DecodeImageFn, PostprocessFn, WriteMaskFn, ComputeImageStatsFn),
            cpu_seconds,
            threading.Lock(),
        )
        _probe_model(probes, calls, replay_model)
        started, cpu_started = time.perf_counter(), time.process_time()
        segment.run([*job_flags(input_dir, export_dir, output), *extra])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if not calls:
        raise RuntimeError("the job made no model call: no images to profile")
    durations = np.array([end - start for start, end in calls])
    gaps = np.array([calls[i + 1][0] - calls[i][1] for i in range(len(calls) - 1)])
    return {
        "images": count,
        "wall_seconds": wall,
        "images_per_second": count / wall,
        "process_cpu_ms_per_image": 1000 * cpu / count,
        "step_cpu_ms_per_image": {
            name: 1000 * seconds / count for name, seconds in cpu_seconds.items()
        },
        "model_calls": len(calls),
        "model_call_ms_median": 1000 * float(np.median(durations)),
        "model_seconds": float(durations.sum()),
        "gaps_between_calls_seconds": float(gaps.sum()),
        "before_first_call_seconds": calls[0][0] - started,
        "after_last_call_seconds": started + wall - calls[-1][1],
    }


def standalone_call_ms(export_dir: str, batch_size: int, calls: int = 10) -> float:
    """Median wall milliseconds of one serving call on a batch, with nothing else running."""
    limit = ModelLimit(export_dir, batch_size, 1)
    rates = [limit.images_per_second() for _ in range(calls)]
    return 1000 * batch_size / common.median(rates)


def _cpu_lines(result: dict, label: str) -> list[str]:
    """A run's wall time and where its CPU went, one line per step."""
    per_image = result["step_cpu_ms_per_image"]
    rest = result["process_cpu_ms_per_image"] - sum(per_image.values())
    return [
        f"{label}: {result['images']} images in {result['wall_seconds']:.1f} s "
        f"({result['images_per_second']:.0f} images/s); process CPU "
        f"{result['process_cpu_ms_per_image']:.1f} ms per image, of which:",
        *(f"  {name:22s} {ms:5.2f} ms" for name, ms in sorted(per_image.items())),
        f"  {'model, Beam, start-up':22s} {rest:5.2f} ms",
    ]


def main(argv: list[str] | None = None) -> int:
    from petseg.beam.write import write_json

    parser = argparse.ArgumentParser(prog="benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", default=os.path.join("runs", "bench"))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    export_dir = common.export_bench_model(args.workdir, args.image_size, args.alpha)
    folder, _ = common.bench_jpegs(args.workdir, args.images)
    flags = ["--max-batch-size", str(args.batch_size)]
    result = profile_job(folder, args.images, export_dir, args.workdir, flags)
    result["without_model"] = profile_job(
        folder, args.images, export_dir, args.workdir, flags, replay_model=True
    )
    result["standalone_call_ms"] = standalone_call_ms(export_dir, args.batch_size)
    lines = [
        *_cpu_lines(result, "the job"),
        f"model: {result['model_calls']} calls, median {result['model_call_ms_median']:.0f} ms in "
        f"the job vs {result['standalone_call_ms']:.0f} ms alone "
        f"({1000 * args.batch_size / result['standalone_call_ms']:.0f} images/s); "
        f"{result['model_seconds']:.1f} s in calls, "
        f"{result['gaps_between_calls_seconds']:.1f} s between them, "
        f"{result['before_first_call_seconds']:.1f} s before the first, "
        f"{result['after_last_call_seconds']:.1f} s after the last",
        *_cpu_lines(result["without_model"], "the job without the model's compute"),
    ]
    print("\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "profile.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
