"""``make bench``: every benchmark in one run, written as JSON and a Markdown table.

python -m benchmarks.run --out benchmarks/results [--images 1000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

from benchmarks import common, segmentation, training

# The segmentation targets: the job against the model's own limit and against the naive loop.
TARGET_VS_LIMIT = 0.75
TARGET_VS_NAIVE = 6.0
TARGET_MEMORY = 1.15
TARGET_TRAINING = 1.5


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def run_segmentation(args) -> dict:
    from petseg.export import read_model_info

    workdir = args.workdir
    export_dir = common.export_bench_model(workdir, args.image_size, args.alpha)
    folder, paths = common.bench_jpegs(workdir, args.images)
    one_batch, _ = common.bench_jpegs(workdir, args.batch_size)
    large, _ = common.bench_jpegs(workdir, 5 * args.images)
    print(
        f"segmentation: {args.images} JPEGs of 500x375, model {args.image_size}px alpha "
        f"{args.alpha}, batch {args.batch_size}, {args.repeats} rounds",
        flush=True,
    )
    result = segmentation.compare(
        export_dir,
        (folder, args.images),
        (one_batch, args.batch_size),
        paths[: max(20, args.images // 4)],
        workdir,
        args.batch_size,
        args.repeats,
    )
    memory_small, _ = segmentation.job_peak_memory(folder, export_dir, workdir)
    memory_large, rate_large = segmentation.job_peak_memory(large, export_dir, workdir)
    print(
        f"  peak RSS {memory_small:.0f} MiB at N, {memory_large:.0f} MiB at 5N; "
        f"the job at 5N {rate_large:.1f} images/s",
        flush=True,
    )
    limit = result["model_limit"]["images_per_second"]
    job = result["job_in_process"]
    bench_model = read_model_info(export_dir).metadata.get("bench_model", "")
    result.update(
        {
            "images": args.images,
            "bench_model": bench_model,
            "model_image_size": args.image_size,
            "alpha": args.alpha,
            "peak_rss_mib": {"N": memory_small, "5N": memory_large},
            "job_5N_images_per_second": rate_large,
            "ratios": {
                "job_vs_model_limit": _ratio(job["images_per_second"], limit),
                "steady_job_vs_model_limit": _ratio(job["steady_images_per_second"], limit),
                "job_5N_vs_model_limit": _ratio(rate_large, limit),
                "job_vs_naive": _ratio(
                    job["images_per_second"], result["naive_loop"]["images_per_second"]
                ),
                "memory_5N_vs_N": _ratio(memory_large, memory_small),
            },
        }
    )
    return result


def _oxford_examples():
    from petseg.data import oxford_examples

    sample = os.environ.get("PETSEG_OXFORD_SAMPLE", "")
    if not os.path.isdir(os.path.join(sample, "images")):
        return None
    return oxford_examples(sample, "trainval"), oxford_examples(sample, "test")


def run_training(args) -> dict:
    from petseg.data import write_synthetic_files

    splits = _oxford_examples()
    if splits:
        examples = splits[0]
        data = f"Oxford-IIIT Pet sample, {len(examples)} trainval images"
    else:
        folder = tempfile.mkdtemp(prefix="train-", dir=args.workdir)
        examples = write_synthetic_files(folder, folder, 300, 256)
        data = "300 synthetic pets (PETSEG_OXFORD_SAMPLE absent)"
    print(f"training: {data}, {args.train_size}px, batch 64, {args.repeats} rounds", flush=True)
    result = training.compare_throughput(
        examples, args.train_size, args.alpha, args.warmup_steps, args.train_steps, args.repeats
    )
    result["data"] = data
    # The shared ImageNet weights are MobileNetV2's alpha 1.0.
    weights = os.environ.get("PETSEG_ENCODER_WEIGHTS", "")
    if args.accuracy_epochs and splits and os.path.isfile(weights) and args.alpha == 1.0:
        print(
            f"accuracy: both recipes, {args.accuracy_epochs} epochs, ImageNet encoder", flush=True
        )
        result["accuracy"] = training.compare_accuracy(
            splits[0], splits[1], args.train_size, args.alpha, weights, args.accuracy_epochs
        )
    else:
        result["accuracy"] = None
        print(
            "accuracy: skipped (needs --accuracy-epochs > 0, --alpha 1.0, PETSEG_OXFORD_SAMPLE "
            "and PETSEG_ENCODER_WEIGHTS)",
            flush=True,
        )
    return result


def _met(value: float, target: float, at_most: bool = False) -> str:
    return "met" if (value <= target if at_most else value >= target) else "**missed**"


def segmentation_markdown(seg: dict) -> list[str]:
    limit = seg["model_limit"]["images_per_second"]
    job, multi = seg["job_in_process"], seg["job_multi_processing_2"]
    ratios = seg["ratios"]
    memory = seg["peak_rss_mib"]
    return [
        f"**Segmentation**, {seg['images']} JPEGs of 500x375, model {seg['model_image_size']} px, "
        f"alpha {seg['alpha']} ({seg['bench_model']}), batch {seg['model_limit']['batch_size']}, "
        f"medians of {len(seg['model_limit']['runs'])} rounds:",
        "",
        "| what | images/s end to end | images/s steady | start-up (s, one batch) |",
        "| --- | ---: | ---: | ---: |",
        f"| model limit (serving function, pre-resized batches, no I/O) | {limit:.1f} | | |",
        f"| `beam_jobs.segment`, DirectRunner in-process | **{job['images_per_second']:.1f}** "
        f"| {job['steady_images_per_second']:.1f} | {job['one_batch_seconds']:.1f} |",
        f"| `beam_jobs.segment`, DirectRunner in-process, {5 * seg['images']} images "
        f"(the memory run, one) | {seg['job_5N_images_per_second']:.1f} | | |",
        f"| `beam_jobs.segment`, DirectRunner multi_processing, 2 workers "
        f"| {multi['images_per_second']:.1f} | {multi['steady_images_per_second']:.1f} "
        f"| {multi['one_batch_seconds']:.1f} |",
        f"| naive loop (decode, `model.predict` one image, save PNG) "
        f"| {seg['naive_loop']['images_per_second']:.1f} | | |",
        "",
        "| ratio | measured | target | |",
        "| --- | ---: | ---: | --- |",
        f"| job / model limit, end to end | {ratios['job_vs_model_limit']:.2f}x "
        f"| >= {TARGET_VS_LIMIT}x | {_met(ratios['job_vs_model_limit'], TARGET_VS_LIMIT)} |",
        f"| job / model limit, end to end at 5N | {ratios['job_5N_vs_model_limit']:.2f}x "
        f"| >= {TARGET_VS_LIMIT}x | {_met(ratios['job_5N_vs_model_limit'], TARGET_VS_LIMIT)} |",
        f"| job / model limit, steady state | {ratios['steady_job_vs_model_limit']:.2f}x "
        f"| >= {TARGET_VS_LIMIT}x | {_met(ratios['steady_job_vs_model_limit'], TARGET_VS_LIMIT)} |",
        f"| job / naive loop | {ratios['job_vs_naive']:.1f}x | >= {TARGET_VS_NAIVE:.0f}x "
        f"| {_met(ratios['job_vs_naive'], TARGET_VS_NAIVE)} |",
        f"| peak RSS at 5N / at N ({memory['5N']:.0f} / {memory['N']:.0f} MiB) "
        f"| {ratios['memory_5N_vs_N']:.2f}x | <= {TARGET_MEMORY}x "
        f"| {_met(ratios['memory_5N_vs_N'], TARGET_MEMORY, at_most=True)} |",
        "",
    ]


def training_markdown(train: dict) -> list[str]:
    rates, steps, speedup = train["images_per_second"], train["ms_per_step"], train["speedup"]
    pipelines, policies = train["input_pipeline"], train["policies"]
    labels = {
        "tutorial": "seed tutorial (its model, pipeline and compile; float [0, 1] input)",
        "petseg": f"petseg, default settings ({policies['petseg']})",
        "petseg_float32": "petseg, `--mixed-precision off` (float32)",
    }
    lines = [
        f"**Training**, {train['data']}, {train['image_size']} px, alpha {train['alpha']}, "
        f"batch {train['batch_size']}, frozen encoder, {train['steps_timed']} steps after warm-up, "
        f"medians of {len(train['runs']['tutorial'])} rounds:",
        "",
        "| recipe | images/s | ms/step | vs tutorial | input pipeline alone, ms/batch (CPU) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label in labels.items():
        lines.append(
            f"| {label} | {rates[name]:.1f} | {steps[name]:.0f} | {speedup[name]:.2f}x "
            f"| {pipelines[name]['wall_ms']:.0f} ({pipelines[name]['cpu_ms']:.0f}) |"
        )
    lines += [
        "",
        f"Training speed-up over the tutorial: **{speedup['petseg']:.2f}x** (target >= "
        f"{TARGET_TRAINING}x: {_met(speedup['petseg'], TARGET_TRAINING)}).",
        "",
    ]
    accuracy = train.get("accuracy")
    if accuracy:
        lines += [
            f"Accuracy after {accuracy['epochs']} epochs of each recipe ({accuracy['steps_per_epoch']} "
            f"steps each), ImageNet encoder, {accuracy['test_images']} test images scored at "
            f"{train['image_size']} px:",
            "",
            "| recipe | pixel accuracy | mean IoU | training time (s) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name in ("tutorial", "petseg"):
            scores = accuracy[name]
            lines.append(
                f"| {'seed tutorial' if name == 'tutorial' else 'petseg'} ({scores['policy']}) "
                f"| {scores['pixel_accuracy']:.3f} | {scores['mean_iou']:.3f} "
                f"| {scores['training_seconds']:.0f} |"
            )
        lines.append("")
    return lines


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['date']} on {machine['cpu']} ({machine['cores']} cores, GPUs: "
        f"{machine['gpus'] or 'none'}), Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}.",
        "",
    ]
    if results.get("segmentation"):
        lines += segmentation_markdown(results["segmentation"])
    if results.get("training"):
        lines += training_markdown(results["training"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from petseg.beam.write import write_atomically, write_json

    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="benchmarks/results", help="folder for results.json and results.md"
    )
    parser.add_argument(
        "--images", type=int, default=1000, help="N, the JPEGs segmented (memory also at 5N)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of every measurement (medians reported)"
    )
    parser.add_argument(
        "--image-size", type=int, default=common.BENCH_IMAGE_SIZE, help="segmentation model size"
    )
    parser.add_argument(
        "--alpha", type=float, default=common.BENCH_ALPHA, help="encoder width, both benchmarks"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="inference batch size")
    parser.add_argument("--train-size", type=int, default=128, help="training image size")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument(
        "--accuracy-epochs",
        type=int,
        default=training.TUTORIAL_EPOCHS,
        help="epochs of each recipe before comparing test accuracy (0 skips)",
    )
    parser.add_argument("--only", choices=["segmentation", "training"], help="run one benchmark")
    parser.add_argument(
        "--workdir",
        default=os.path.join("runs", "bench"),
        help="cache of generated inputs and models; the jobs write their outputs here too",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one round: checks the harness"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.image_size, args.alpha = 16, 1, 64, 0.35
        args.train_size, args.warmup_steps, args.train_steps, args.batch_size = 64, 1, 2, 8
        args.accuracy_epochs = 0
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.workdir, exist_ok=True)
    results = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": common.machine(),
        "arguments": vars(args),
    }
    if args.only in (None, "segmentation"):
        results["segmentation"] = run_segmentation(args)
    if args.only in (None, "training"):
        results["training"] = run_training(args)
    write_json(os.path.join(args.out, "results.json"), results)
    table = markdown(results)
    write_atomically(os.path.join(args.out, "results.md"), table.encode("utf-8"))
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
