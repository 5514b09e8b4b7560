"""The serving backends side by side: TensorFlow, OpenVINO and ONNX Runtime on one export.

python -m benchmarks.backends [--out benchmarks/results] [--workdir runs/bench] [--quick]

Per backend: the model limit (the job's model call on one batch, no I/O), also as a
share of the machine's float32 matrix-multiply rate; the job end to end over the
generated JPEGs; the first batch in a fresh process (import, load, one call); and, on
the shared sample's test split (``PETSEG_OXFORD_SAMPLE``), the share of pixels whose
class differs from TensorFlow's, with the split's pixel accuracy, mean and per-class
IoU, on the demo's export (``runs/demo/training/export``, trained on the sample) where
it exists, else on ``PETSEG_ACCURACY_MODEL`` or the bench model. ``openvino-int8`` is
calibrated on 64 training images. Each round runs every backend once, so drift hits
all alike; figures are medians.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks import common
from benchmarks.segmentation import Job, serving_rate

BACKENDS = ("tensorflow", "openvino", "onnx", "openvino-int8")
# The model whose test-split scores are compared, when present: the demo's, trained on the
# shared sample (make demo); else the bench model.
ACCURACY_MODEL = os.path.join("runs", "demo", "training", "export")
MATMUL_SIDE = 2048

FIRST_BATCH = """
import sys, time
started = float(sys.argv[3])
import numpy as np
from petseg.beam.inference import PetsegModelHandler
model = PetsegModelHandler(sys.argv[1], backend=sys.argv[2], max_batch_size=int(sys.argv[4]))
loaded = model.load_model()
size = loaded.image_size
loaded.probabilities(np.zeros((int(sys.argv[4]), size, size, 3), np.uint8))
print(time.time() - started)
"""


def converted_model(source: str, export_dir: str, calibration_dir: str) -> str:
    """``source`` copied to ``export_dir`` with every serving format, int8 calibrated on
    the images below ``calibration_dir`` (made once)."""
    from petseg.serving.formats import FORMATS, write_formats

    if not os.path.isdir(export_dir):
        staging = export_dir + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        write_formats(staging, tuple(FORMATS), calibration_dir)
        os.replace(staging, export_dir)
    return export_dir


def trainval_images(data_dir: str, folder: str, count: int = 64) -> str:
    """A folder of links to the first ``count`` training images of an Oxford-layout folder:
    int8's calibration set, kept apart from the test split."""
    from petseg.training.data.oxford import oxford_examples

    os.makedirs(folder, exist_ok=True)
    for example in oxford_examples(data_dir, "trainval")[:count]:
        link = os.path.join(folder, os.path.basename(example.image_path))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(example.image_path), link)
    return folder


def matmul_gflops(repeats: int = 5) -> float:
    """This machine's float32 matrix multiply (numpy's BLAS, every core), GFLOP/s, median."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((MATMUL_SIDE, MATMUL_SIDE), dtype=np.float32) for _ in range(2))
    a @ b
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        rates.append(2 * MATMUL_SIDE**3 / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


def model_gflop(export_dir: str, image_size: int) -> float:
    """GFLOP per image of ``serving_default`` (TensorFlow's profiler on the frozen graph,
    a multiply-add counted as 2)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    loaded = tf.saved_model.load(export_dir)  # kept: the signature refers to its variables
    function = loaded.signatures["serving_default"]
    spec = tf.TensorSpec([1, image_size, image_size, 3], tf.uint8)
    concrete = tf.function(lambda images: function(images=images)).get_concrete_function(spec)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    graph = convert_variables_to_constants_v2(concrete).graph
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 1e9


def first_batch_seconds(export_dir: str, backend: str, batch_size: int) -> float:
    """Seconds from a fresh process's start to its first batch's probabilities."""
    started = str(time.time())
    done = subprocess.run(
        [sys.executable, "-c", FIRST_BATCH, export_dir, backend, started, str(batch_size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{backend}: first batch failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def test_split(model: str, workdir: str) -> dict | None:
    """Per backend, on ``model`` with every format: the test split's pixel accuracy, mean
    and per-class IoU at original resolution, and the share of its pixels whose class
    differs from TensorFlow's; ``None`` without ``PETSEG_OXFORD_SAMPLE``."""
    from petseg.serving.backends import load_runtime
    from petseg.serving.export import read_model_info
    from petseg.training.data.oxford import TRIMAP_TO_CLASS, oxford_examples
    from petseg.training.evaluate import evaluate_examples
    from petseg.training.metrics import metrics_from_confusion

    data_dir = os.environ.get("PETSEG_OXFORD_SAMPLE", "")
    if not os.path.isdir(data_dir):
        return None
    calibration = trainval_images(data_dir, os.path.join(workdir, "calibration-trainval"))
    name = read_model_info(model).model_id
    export_dir = converted_model(model, os.path.join(workdir, f"{name}-formats"), calibration)
    examples = oxford_examples(data_dir, "test")
    results, reference = {}, None
    for backend in BACKENDS:
        runtime, info = load_runtime(export_dir, backend)
        masks: list[np.ndarray] = []
        matrix, _ = evaluate_examples(
            runtime.probabilities,
            examples,
            info.image_size,
            TRIMAP_TO_CLASS,
            info.num_classes,
            each_mask=masks.append,
        )
        reference = reference or masks
        differing = sum(int((a != b).sum()) for a, b in zip(masks, reference, strict=True))
        metrics = metrics_from_confusion(matrix, info.class_names)
        results[backend] = {
            "pixel_accuracy": metrics["pixel_accuracy"],
            "mean_iou": metrics["mean_iou"],
            "iou": metrics["iou"],
            "differing_pixel_share": differing / sum(mask.size for mask in masks),
            "images": len(masks),
            "model_id": info.model_id,
        }
    return results


def measure(workdir: str, sizes: common.Sizes, accuracy_model: str | None = None) -> dict:
    """Every backend figure (see the module docstring) for ``sizes``; the test split's
    on ``accuracy_model`` (default: the demo's export if there, else the bench model)."""
    from petseg.serving.backends import load_runtime

    bench_model = common.export_bench_model(workdir, sizes)
    folder, _ = common.bench_jpegs(workdir, sizes.images)
    export_dir = converted_model(bench_model, bench_model + "-formats", folder)
    if accuracy_model is None:
        accuracy_model = ACCURACY_MODEL if os.path.isdir(ACCURACY_MODEL) else bench_model
    calls = {
        backend: load_runtime(export_dir, backend, sizes.batch_size)[0].probabilities
        for backend in BACKENDS
    }
    jobs = {
        backend: Job(export_dir, workdir, sizes.batch_size, ("--backend", backend))
        for backend in BACKENDS
    }
    runs: dict[str, list] = {backend: [] for backend in BACKENDS}
    for round_number in range(sizes.repeats):
        for backend in BACKENDS:
            limit = serving_rate(
                calls[backend], sizes.image_size, sizes.batch_size, sizes.images // 32 + 2
            )
            seconds = jobs[backend].seconds(folder, sizes.images)
            first = first_batch_seconds(export_dir, backend, sizes.batch_size)
            runs[backend].append(
                {
                    "model_limit_images_per_second": limit["images_per_second"],
                    "model_cpu_ms_per_image": limit["cpu_ms_per_image"],
                    "job_images_per_second": sizes.images / seconds,
                    "first_batch_seconds": first,
                }
            )
        rates = ", ".join(
            f"{name} {values[-1]['job_images_per_second']:.1f}" for name, values in runs.items()
        )
        print(f"  backends, round {round_number + 1}: job {rates} images/s", flush=True)
    return {
        "backends": {backend: common.medians(values) for backend, values in runs.items()},
        "matmul_gflops": matmul_gflops(),
        "model_gflop_per_image": model_gflop(export_dir, sizes.image_size),
        "test_split": test_split(accuracy_model, workdir),
    }


def best_job_ratio(results: dict) -> float:
    """The fastest float32 backend's job rate over TensorFlow's."""
    rates = {
        name: figures["job_images_per_second"] for name, figures in results["backends"].items()
    }
    return max(rate for name, rate in rates.items() if name != "tensorflow") / rates["tensorflow"]


def markdown(results: dict, sizes: common.Sizes) -> list[str]:
    """The backends table docs/benchmarks.md reports."""
    matmul, gflop = results["matmul_gflops"], results["model_gflop_per_image"]
    ceiling = matmul / gflop
    split = results["test_split"] or {}
    tensorflow = results["backends"]["tensorflow"]
    rows = []
    for name, figures in results["backends"].items():
        limit = figures["model_limit_images_per_second"]
        scores = split.get(name)
        rows.append(
            (
                name,
                f"{limit:.1f}",
                f"{limit / ceiling:.0%}",
                f"{figures['job_images_per_second']:.1f}",
                f"{figures['job_images_per_second'] / tensorflow['job_images_per_second']:.2f}x",
                f"{figures['first_batch_seconds']:.2f}",
                *(
                    (
                        f"{scores['differing_pixel_share']:.4%}",
                        f"{scores['pixel_accuracy']:.4f}",
                        f"{scores['mean_iou']:.4f}",
                        *(f"{scores['iou'][name]:.4f}" for name in sorted(scores["iou"])),
                    )
                    if scores
                    else ("-",) * 3
                ),
            )
        )
    header = (
        "backend",
        "model limit, images/s",
        "of the matmul ceiling",
        "job, images/s",
        "job vs TensorFlow",
        "first batch, s",
        "pixels unlike TensorFlow's",
        "pixel accuracy",
        "mean IoU",
        *(f"IoU {name}" for name in sorted(next(iter(split.values()))["iou"]) if split),
    )
    return [
        f"**Backends**, {sizes.images} JPEGs of 500 x 375, model {sizes.image_size} px, alpha "
        f"{sizes.alpha}, batch {sizes.batch_size}, medians of {sizes.repeats} rounds; the "
        f"matmul ceiling is this machine's float32 matrix multiply ({matmul:.1f} GFLOP/s) over "
        f"the model's {gflop:.3f} GFLOP per image = {ceiling:.1f} images/s; test split: "
        + (
            f"{first['images']} images of the shared sample, model {first['model_id']}:"
            if (first := next(iter(split.values()), None))
            else "not measured (no PETSEG_OXFORD_SAMPLE):"
        ),
        "",
        *common.table(header, rows),
    ]


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(argv, "benchmarks.backends", "backends")
    accuracy_model = os.environ.get("PETSEG_ACCURACY_MODEL") or None
    print(f"backends: {args.sizes}", flush=True)
    results = {"sizes": dataclasses.asdict(args.sizes)}
    results.update(measure(args.workdir, args.sizes, accuracy_model))
    results["best_job_vs_tensorflow"] = best_job_ratio(results)
    common.write_results(args.out, "backends", results, markdown(results, args.sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
