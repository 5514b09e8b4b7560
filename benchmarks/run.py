"""``make bench``: the segmentation and training benchmarks in one run.

python -m benchmarks.run [--out benchmarks/results] [--workdir runs/bench] [--quick]

Writes ``OUT/results.json`` and ``.md``; ``--quick`` measures all once on tiny sizes.
"""

from __future__ import annotations

import sys
from dataclasses import asdict

from benchmarks import backends, common, segmentation, training

# Figure -> (what it compares, its target, whether the target is an upper bound);
# figures named ``*_ms`` are milliseconds, the others ratios.
TARGETS = {
    "job_vs_model_limit": ("job / model limit, end to end", 0.8, False),
    "job_5N_vs_model_limit": ("job / model limit, end to end at 5N", 0.8, False),
    "steady_job_vs_model_limit": ("job / model limit, steady state", 0.9, False),
    "job_vs_naive": ("job / naive loop", 6.0, False),
    "memory_5N_vs_N": ("peak RSS at 5N / at N", 1.15, True),
    "small_image_marginal_ms": ("small images, marginal wall time per image", 4.0, True),
    "small_memory_10N_vs_N": ("small images, peak RSS at 10N / at N", 1.15, True),
    "training_vs_tutorial": ("training, petseg / tutorial", 1.5, False),
    "best_backend_job_vs_tensorflow": ("job, fastest backend / TensorFlow's", 1.35, False),
}


def ratios(segment: dict, scale: dict, recipes: dict, serving: dict) -> dict[str, float]:
    """Every figure of :data:`TARGETS`, from the benchmarks' results."""
    limit = segment["model_limit"]["images_per_second"]
    job, memory_n, memory_5n = (segment[key] for key in ("job_in_process", "memory_N", "memory_5N"))
    return {
        "small_image_marginal_ms": scale["marginal_ms_per_image"],
        "small_memory_10N_vs_N": scale["peak_rss_mib_10N"] / scale["peak_rss_mib_N"],
        "job_vs_model_limit": job["images_per_second"] / limit,
        "job_5N_vs_model_limit": memory_5n["images_per_second"] / limit,
        "steady_job_vs_model_limit": job["steady_images_per_second"] / limit,
        "job_vs_naive": job["images_per_second"] / segment["naive_loop"]["images_per_second"],
        "memory_5N_vs_N": memory_5n["peak_rss_mib"] / memory_n["peak_rss_mib"],
        "training_vs_tutorial": recipes["petseg"]["speedup"],
        "best_backend_job_vs_tensorflow": backends.best_job_ratio(serving),
    }


def markdown(results: dict) -> list[str]:
    """The results as the tables docs/benchmarks.md reports."""
    sizes, segment, train = results["sizes"], results["segmentation"], results["training"]
    scale, small = results["scale"], sizes["small_images"]
    limit, memory = segment["model_limit"], (segment["memory_N"], segment["memory_5N"])
    accuracy, scores = train["accuracy"], ("pixel_accuracy", "mean_iou", "training_seconds")

    def rates(figures: dict, *keys: str) -> tuple[str, ...]:
        return tuple(f"{figures[key]:.1f}" for key in ("images_per_second", *keys))

    job_keys = ("steady_images_per_second", "one_batch_seconds")
    lines = [
        f"**Segmentation**, {sizes['images']} JPEGs of 500 x 375, model {sizes['image_size']} px, "
        f"alpha {sizes['alpha']} ({results['bench_model']}), batch {sizes['batch_size']}, "
        f"medians of {sizes['repeats']} rounds:",
        "",
        *common.table(
            ("what", "images/s end to end", "images/s steady", "start-up (s, one batch)"),
            [
                ("model limit (no I/O)", *rates(limit)),
                ("`beam_jobs.segment`, in-process", *rates(segment["job_in_process"], *job_keys)),
                ("the same, with `--coco`", *rates(segment["job_in_process_coco"], *job_keys)),
                (f"the same, {5 * sizes['images']} images, once", *rates(memory[1])),
                ("the same, 2 processes", *rates(segment["job_multi_processing_2"], *job_keys)),
                ("naive loop (`model.predict` one image)", *rates(segment["naive_loop"])),
            ],
        ),
        f"The model alone: {limit['cpu_ms_per_image']:.1f} CPU ms per image, "
        f"{limit['cpu_ms_per_image'] * limit['images_per_second'] / 1000:.2f} cores busy. Peak "
        f"RSS {memory[0]['peak_rss_mib']:.0f} MiB at N, {memory[1]['peak_rss_mib']:.0f} at 5N.",
        "",
        f"**Scale**, JPEGs of 96 x 72 in folders of 100, model 64 px, alpha 0.35, batch "
        f"{sizes['batch_size']}, the job as a command, medians of {sizes['repeats']} rounds: "
        f"{small} images (N) in {scale['seconds_N']:.1f} s, peak RSS "
        f"{scale['peak_rss_mib_N']:.0f} MiB; {10 * small} (10N) in {scale['seconds_10N']:.1f} s, "
        f"{scale['peak_rss_mib_10N']:.0f} MiB. "
        f"Marginal cost per image: {scale['marginal_ms_per_image']:.2f} ms of wall time, "
        f"{scale['marginal_cpu_ms_per_image']:.2f} CPU ms, of which the model alone takes "
        f"{scale['model_cpu_ms_per_image']:.2f}: the job's own CPU outside the model is "
        f"{scale['outside_model_cpu_ms_per_image']:.2f} ms per image.",
        "",
        f"**Training**, {train['data']}, {sizes['train_size']} px, alpha {sizes['alpha']}, batch "
        f"{train['batch_size']}, frozen encoder, {sizes['train_steps']} steps after warm-up; "
        + (
            f"accuracy after {accuracy['epochs']} epochs of {accuracy['steps_per_epoch']} steps "
            f"from the ImageNet encoder, on {accuracy['test_images']} test images:"
            if accuracy
            else "accuracy not measured:"
        ),
        "",
        *common.table(
            ("recipe (policy)", "images/s", "ms/step", "input pipeline, ms/batch", "vs tutorial")
            + ("pixel accuracy", "mean IoU", "training time, s"),
            [
                (f"{name} ({recipe['policy']})", *rates(recipe, "ms_per_step", "input_pipeline_ms"))
                + (f"{recipe['speedup']:.2f}x",)
                + tuple(f"{accuracy[name][key]:.3g}" for key in scores if name in (accuracy or {}))
                for name, recipe in train["recipes"].items()
            ],
        ),
    ]
    lines += backends.markdown(results["backends"], common.Sizes(**sizes))
    rows = []
    for name, (what, target, at_most) in TARGETS.items():
        value = results["ratios"][name]
        met = value <= target if at_most else value >= target
        unit = " ms" if name.endswith("_ms") else "x"
        bound = f"{'<=' if at_most else '>='} {target}{unit}"
        rows.append((f"{what} {bound}", f"{value:.2f}{unit}", "met" if met else "**missed**"))
    return lines + common.table(("target", "measured", ""), rows)


def main(argv: list[str] | None = None) -> int:
    from petseg.serving.export import read_model_info

    args = common.parse_args(argv, "benchmarks.run", "results")
    sizes = args.sizes
    export_dir = common.export_bench_model(args.workdir, sizes)
    print(f"segmentation: {sizes}", flush=True)
    segment = segmentation.measure(export_dir, args.workdir, sizes)
    scale = segmentation.scale(args.workdir, sizes)
    train = training.measure(args.workdir, sizes)
    serving = backends.measure(args.workdir, sizes)
    results = {
        "sizes": asdict(sizes),
        "bench_model": read_model_info(export_dir).metadata.get("bench_model", ""),
        "segmentation": segment,
        "scale": scale,
        "training": train,
        "backends": serving,
        "ratios": ratios(segment, scale, train["recipes"], serving),
    }
    common.write_results(args.out, "results", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
