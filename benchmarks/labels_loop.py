"""Does correcting the least sure images pay? The whole loop on the shared sample, with
the trimaps standing in for a reviewer's corrections.

python -m benchmarks.labels_loop [--labels 40] [--seed 0] [--workdir runs/bench/labels-loop]
    [--out benchmarks/results]

The sample's trainval images are split in two (seeded): one half trains a base model
(the demo's recipe, fewer fine-tuning epochs); the other half is a pool of unlabelled
photos that the job segments with that model (``--coco``). ``petseg review`` picks the
``--labels`` pool images the model was least sure of, and their trimaps become the
corrections, written as Label Studio's JSON export of those very tasks (each task's
annotation is its trimap, encoded by Label Studio's converter). As many pool images
picked at random make a second export. Two models then train from the same start on the
base half plus either export (``--data-dir`` and ``--labels``), and all three are scored
on the test split at original resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

import numpy as np

from benchmarks import common

TEST_LIST = os.path.join("annotations", "test.txt")
TRAINVAL_LIST = os.path.join("annotations", "trainval.txt")
FINE_TUNE_EPOCHS = 9


def split_sample(sample: str, workdir: str, seed: int) -> tuple[str, str]:
    """The base half as an Oxford-layout folder (links to the sample's images and
    trimaps, its own ``trainval.txt``) and the pool half's photos copied to a folder;
    returns both folders."""
    with open(os.path.join(sample, TRAINVAL_LIST), encoding="utf-8") as file:
        lines = sorted(line for line in file if line.strip() and not line.startswith("#"))
    order = np.random.default_rng(seed).permutation(len(lines))
    base_lines = sorted(lines[index] for index in order[: len(lines) // 2])
    pool_names = sorted(lines[index].split()[0] for index in order[len(lines) // 2 :])
    base, pool = os.path.join(workdir, "base"), os.path.join(workdir, "pool")
    for folder in (base, pool):
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(base, "annotations"))
    for name in ("images", os.path.join("annotations", "trimaps")):
        os.symlink(os.path.abspath(os.path.join(sample, name)), os.path.join(base, name))
    with open(os.path.join(base, TRAINVAL_LIST), "w", encoding="utf-8") as file:
        file.writelines(base_lines)
    shutil.copy(os.path.join(sample, TEST_LIST), os.path.join(base, TEST_LIST))
    os.makedirs(pool)
    for name in pool_names:
        shutil.copy(os.path.join(sample, "images", f"{name}.jpg"), pool)
    return base, pool


def train(config, workdir: str) -> dict:
    """Trains from scratch into ``workdir``; returns the export and its test-split scores."""
    from petseg.training.loop import train_and_evaluate

    shutil.rmtree(workdir, ignore_errors=True)
    started = time.perf_counter()
    result = train_and_evaluate(config, workdir)
    return {
        "export": result.export_dir,
        "mean_iou": float(result.metrics["mean_iou"]),
        "pixel_accuracy": float(result.metrics["pixel_accuracy"]),
        "iou": {name: float(value) for name, value in result.metrics["iou"].items()},
        "seconds": time.perf_counter() - started,
    }


def corrected_export(tasks: list[dict], sample: str, path: str) -> None:
    """``tasks`` as Label Studio exports them once a reviewer has painted each image's
    true classes (its trimap, class = value - 1) over the prediction."""
    from PIL import Image

    from petseg.classes import BACKGROUND, CLASS_NAMES
    from petseg.labels.labelstudio import prediction_results

    exported = []
    for number, task in enumerate(tasks, start=1):
        name = os.path.splitext(os.path.basename(task["data"]["image"]))[0]
        with Image.open(os.path.join(sample, "annotations", "trimaps", f"{name}.png")) as trimap:
            truth = np.asarray(trimap, np.uint8) - 1
        result = prediction_results(truth, CLASS_NAMES, BACKGROUND, task["data"]["image"])
        annotation = {"id": number, "was_cancelled": False, "result": result}
        exported.append({"id": number, "data": task["data"], "annotations": [annotation]})
    with open(path, "w", encoding="utf-8") as file:
        json.dump(exported, file)


def picks(output: str, count: int, seed: int) -> dict[str, list[dict]]:
    """The ``count`` least sure pool images (``petseg review``'s pick) and as many at random."""
    from petseg.labels.review import build_review

    everything = build_review(output, 10**9).tasks
    chosen = np.random.default_rng(seed + 1).choice(len(everything), count, replace=False)
    return {
        "least_sure": everything[:count],
        "random": [everything[index] for index in sorted(chosen)],
    }


def run_loop(sample: str, weights: str, workdir: str, count: int, seed: int) -> dict:
    """The loop's figures: the base model, and the models trained with each export."""
    from beam_jobs import segment as segment_job
    from petseg.cli.demo import plan

    base_dir, pool = split_sample(sample, workdir, seed)
    recipe = dataclasses.replace(
        plan(sample, weights, quick=False).config,
        data_dir=base_dir,
        fine_tune_epochs=FINE_TUNE_EPOCHS,
        validation_freq=100,
        plot_examples=0,
        seed=seed,
    )
    results = {"base": train(recipe, os.path.join(workdir, "train-base"))}
    output = os.path.join(workdir, "segmented")
    flags = ["--input", pool, "--model", results["base"]["export"], "--output", output]
    segment_job.run([*flags, "--coco", "--overwrite", "--progress-interval", "0"])
    for name, tasks in picks(output, count, seed).items():
        export = os.path.join(workdir, f"export-{name}.json")
        corrected_export(tasks, sample, export)
        config = dataclasses.replace(recipe, labels=(export,))
        results[name] = train(config, os.path.join(workdir, f"train-{name}"))
        results[name]["images"] = [task["data"]["image"] for task in tasks]
        results[name]["mean_confidence"] = float(
            np.mean([task["data"]["mean_confidence"] for task in tasks])
        )
    return results


def markdown(results: dict) -> list[str]:
    rows = []
    for name, what in (
        ("base", "base half only"),
        ("least_sure", f"+ {results['labels']} least sure, corrected"),
        ("random", f"+ {results['labels']} at random, corrected"),
    ):
        figures = results["runs"][name]
        iou = figures["iou"]
        confidence = figures.get("mean_confidence")
        rows.append(
            (
                what,
                f"{confidence:.3f}" if confidence is not None else "",
                f"{figures['mean_iou']:.4f}",
                *(f"{iou[key]:.4f}" for key in ("pet", "background", "border")),
                f"{figures['pixel_accuracy']:.4f}",
            )
        )
    header = ("training data", "picked images' mean confidence", "mean IoU", "pet IoU")
    header += ("background IoU", "border IoU", "pixel accuracy")
    return [
        f"**The loop**, the sample's trainval split in halves (seed {results['seed']}): "
        f"{results['base_images']} base images, {results['pool_images']} in the pool; "
        f"scored on {results['test_images']} test images at original resolution:",
        "",
        *common.table(header, rows),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.labels_loop")
    parser.add_argument("--labels", type=int, default=40, help="pool images corrected")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.path.join("runs", "bench", "labels-loop"))
    parser.add_argument("--out", default=common.RESULTS_DIR, help="folder for the results")
    args = parser.parse_args(argv)
    sample = os.environ.get("PETSEG_OXFORD_SAMPLE")
    weights = os.environ.get("PETSEG_ENCODER_WEIGHTS")
    if not (sample and weights and os.path.isfile(weights)):
        parser.error("set PETSEG_OXFORD_SAMPLE and PETSEG_ENCODER_WEIGHTS (make sets both)")
    started = time.perf_counter()
    runs = run_loop(sample, weights, args.workdir, args.labels, args.seed)
    with open(os.path.join(sample, TRAINVAL_LIST), encoding="utf-8") as file:
        trainval = sum(1 for line in file if line.strip() and not line.startswith("#"))
    with open(os.path.join(sample, TEST_LIST), encoding="utf-8") as file:
        test = sum(1 for line in file if line.strip() and not line.startswith("#"))
    sizes = {"base_images": trainval // 2, "pool_images": trainval - trainval // 2}
    results = {"labels": args.labels, "seed": args.seed, **sizes, "test_images": test, "runs": runs}
    results["seconds"] = time.perf_counter() - started
    common.write_results(args.out, "labels_loop", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
