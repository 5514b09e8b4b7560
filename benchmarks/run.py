"""``make bench``: every benchmark in one run, written as JSON and a Markdown table.

python -m benchmarks.run --out benchmarks/results [--images 200] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

from benchmarks import common, segmentation, training


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def run_segmentation(args, workdir: str) -> dict:
    export_dir = common.export_bench_model(
        os.path.join(workdir, f"model-{args.image_size}-{args.alpha}"), args.image_size, args.alpha
    )
    small = os.path.join(workdir, f"jpegs-{args.images}")
    large = os.path.join(workdir, f"jpegs-{5 * args.images}")
    paths = common.write_jpegs(small, args.images)
    common.write_jpegs(large, 5 * args.images)
    print(
        f"segmentation: {args.images} JPEGs of 500x375, model {args.image_size}px alpha {args.alpha}",
        flush=True,
    )
    limit = segmentation.model_limit(
        export_dir, args.batch_size, max(2, args.images // args.batch_size), args.repeats
    )
    print(f"  model limit        {limit['images_per_second']:.1f} images/s", flush=True)
    flags = ["--max-batch-size", str(args.batch_size)]
    in_process = segmentation.job(small, export_dir, args.images, args.repeats, flags)
    print(f"  job (in-process)   {in_process['images_per_second']:.1f} images/s", flush=True)
    multi = segmentation.job(
        small,
        export_dir,
        args.images,
        args.repeats,
        flags + ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    )
    print(f"  job (2 processes)  {multi['images_per_second']:.1f} images/s", flush=True)
    naive = segmentation.naive_loop(paths[: max(20, args.images // 4)], export_dir, args.repeats)
    print(f"  naive loop         {naive['images_per_second']:.1f} images/s", flush=True)
    memory_small = segmentation.job_peak_memory(small, export_dir)
    memory_large = segmentation.job_peak_memory(large, export_dir)
    print(
        f"  peak RSS           {memory_small:.0f} MiB at N, {memory_large:.0f} MiB at 5N",
        flush=True,
    )
    best_job = max(in_process["images_per_second"], multi["images_per_second"])
    return {
        "images": args.images,
        "model_image_size": args.image_size,
        "alpha": args.alpha,
        "model_limit": limit,
        "job_in_process": in_process,
        "job_multi_processing_2": multi,
        "naive_loop": naive,
        "peak_rss_mib": {"N": memory_small, "5N": memory_large},
        "ratios": {
            "job_vs_model_limit": _ratio(best_job, limit["images_per_second"]),
            "job_vs_naive": _ratio(best_job, naive["images_per_second"]),
            "memory_5N_vs_N": _ratio(memory_large, memory_small),
        },
    }


def run_training(args) -> dict:
    from petseg.data import oxford_examples, synthetic_example

    sample = os.environ.get("PETSEG_OXFORD_SAMPLE", "")
    if os.path.isdir(os.path.join(sample, "images")):
        examples = oxford_examples(sample, "trainval")
        data = f"Oxford-IIIT Pet sample, {len(examples)} trainval images"
    else:
        examples = _synthetic_files(
            tempfile.mkdtemp(prefix="petseg-bench-train-"), 300, synthetic_example
        )
        data = "300 synthetic pets (PETSEG_OXFORD_SAMPLE absent)"
    print(f"training: {data}, {args.train_size}px, batch 64", flush=True)
    result = training.compare(
        examples,
        args.train_size,
        args.alpha,
        None,
        args.warmup_steps,
        args.train_steps,
        args.repeats,
    )
    result["data"] = data
    print(
        f"  tutorial {result['tutorial_images_per_second']:.1f} images/s, petseg "
        f"{result['petseg_images_per_second']:.1f} ({result['speedup']:.2f}x), mixed precision "
        f"{result['petseg_mixed_precision_images_per_second']:.1f} "
        f"({result['speedup_mixed_precision']:.2f}x)",
        flush=True,
    )
    return result


def _synthetic_files(folder: str, count: int, synthetic_example) -> list:
    import numpy as np
    from PIL import Image

    from petseg.data import LabelledFile

    examples = []
    for index in range(count):
        image, mask = synthetic_example(index, 256)
        image_path = os.path.join(folder, f"{index}.jpg")
        mask_path = os.path.join(folder, f"{index}.png")
        Image.fromarray(image).save(image_path, quality=90)
        Image.fromarray((mask[:, :, 0] + 1).astype(np.uint8)).save(mask_path)
        examples.append(LabelledFile(image_path, mask_path))
    return examples


def markdown(results: dict) -> str:
    lines = [
        f"Measured {results['date']} on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores, GPUs: {results['machine']['gpus'] or 'none'}).",
        "",
    ]
    seg = results.get("segmentation")
    if seg:
        lines += [
            f"**Segmentation**, {seg['images']} JPEGs of 500x375, model {seg['model_image_size']} px, "
            f"alpha {seg['alpha']}, medians of {len(seg['model_limit']['runs'])} runs:",
            "",
            "| what | images/s |",
            "| --- | ---: |",
            f"| model limit (serving function, pre-resized batches, no I/O) | {seg['model_limit']['images_per_second']:.1f} |",
            f"| `beam_jobs.segment`, DirectRunner in-process | {seg['job_in_process']['images_per_second']:.1f} |",
            f"| `beam_jobs.segment`, DirectRunner multi_processing, 2 workers | {seg['job_multi_processing_2']['images_per_second']:.1f} |",
            f"| naive loop (decode, `model.predict` one image, save PNG) | {seg['naive_loop']['images_per_second']:.1f} |",
            "",
            f"Job / model limit: **{seg['ratios']['job_vs_model_limit']:.2f}x**; job / naive loop: "
            f"**{seg['ratios']['job_vs_naive']:.1f}x**; peak RSS {seg['peak_rss_mib']['N']:.0f} MiB at N, "
            f"{seg['peak_rss_mib']['5N']:.0f} MiB at 5N (**{seg['ratios']['memory_5N_vs_N']:.2f}x**).",
            "",
        ]
    train = results.get("training")
    if train:
        lines += [
            f"**Training**, {train['data']}, {train['image_size']} px, alpha {train['alpha']}, "
            f"batch {train['batch_size']}, frozen encoder, {train['steps_timed']} steps after warm-up:",
            "",
            "| recipe | images/s | ms/step |",
            "| --- | ---: | ---: |",
            f"| seed tutorial (its pipeline, float [0, 1] input) | {train['tutorial_images_per_second']:.1f} | {train['ms_per_step']['tutorial']:.0f} |",
            f"| petseg (float32) | {train['petseg_images_per_second']:.1f} | {train['ms_per_step']['petseg']:.0f} |",
            f"| petseg `--mixed-precision` | {train['petseg_mixed_precision_images_per_second']:.1f} | {train['ms_per_step']['petseg_mixed_precision']:.0f} |",
            "",
            f"Speed-up over the tutorial: **{train['speedup']:.2f}x** (float32), "
            f"**{train['speedup_mixed_precision']:.2f}x** (mixed precision).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="benchmarks/results", help="folder for results.json and results.md"
    )
    parser.add_argument(
        "--images", type=int, default=200, help="N, the JPEGs segmented (memory also at 5N)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per measurement (medians reported)"
    )
    parser.add_argument("--image-size", type=int, default=128, help="segmentation model size")
    parser.add_argument("--alpha", type=float, default=1.0, help="encoder width, both benchmarks")
    parser.add_argument("--batch-size", type=int, default=32, help="inference batch size")
    parser.add_argument("--train-size", type=int, default=128, help="training image size")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--only", choices=["segmentation", "training"], help="run one benchmark")
    parser.add_argument(
        "--workdir",
        default=os.path.join(tempfile.gettempdir(), "petseg-bench"),
        help="cache of generated inputs and models",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one run: checks the harness"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.image_size, args.alpha = 16, 1, 64, 0.35
        args.train_size, args.warmup_steps, args.train_steps, args.batch_size = 64, 1, 2, 8
    os.makedirs(args.out, exist_ok=True)
    results = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": common.machine(),
        "arguments": vars(args),
    }
    if args.only in (None, "segmentation"):
        results["segmentation"] = run_segmentation(args, args.workdir)
    if args.only in (None, "training"):
        results["training"] = run_training(args)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    table = markdown(results)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as file:
        file.write(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
