"""``make demo``: train, export, segment held-out images on Beam, score them, report.

Offline on a fresh clone. With the shared Oxford-IIIT Pet sample and the
ImageNet weights present (``PETSEG_OXFORD_SAMPLE``, ``PETSEG_ENCODER_WEIGHTS``)
it trains on the sample's trainval images and segments its test images;
otherwise it trains on synthetic pets from random init and segments synthetic
pets it never saw. Either way the held-out folder is in the Oxford layout, so
the same evaluation scores it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass

from petseg.cli.flags import StrictArgumentParser
from petseg.training.config import TrainConfig
from petseg.training.data import oxford_examples, write_synthetic_files

PROG = "petseg-demo"
# Seconds the demo's training may take on the real photos: the fine-tuning
# epochs are fitted to this machine's measured speed, so a first `make demo`
# takes minutes on any CPU generation.
TRAINING_BUDGET_S = 300.0
FINE_TUNE_EPOCHS = (4, 18)  # the fewest and the most the budget may give
# Fine-tuning steps timed, after two untimed ones that trace and warm up.
TIMED_STEPS = 4
# An epoch of the demo's training over its timed steps alone: validation every
# third epoch, checkpoints and the prediction panel (measured: docs/benchmarks.md).
EPOCH_OVERHEAD = 1.8
# The least sure images the demo writes as Label Studio tasks.
REVIEW_COUNT = 20


@dataclass(frozen=True)
class DemoPlan:
    """What the demo trains on and what it segments."""

    description: str
    config: TrainConfig
    holdout_source: str | None  # an Oxford-layout folder whose test split is held out


def _cpu_formats() -> tuple[str, ...]:
    """The OpenVINO format, where its converter is installed: the job's ``--backend auto``
    then runs the fastest CPU backend measured (docs/segment.md, "Backends")."""
    from petseg.serving.formats import installed_formats

    return ("openvino",) if "openvino" in installed_formats() else ()


def plan(oxford_sample: str | None, encoder_weights: str | None, quick: bool) -> DemoPlan:
    """Picks real photos with ImageNet weights when both are present, else synthetic data."""
    if (
        oxford_sample
        and os.path.isdir(os.path.join(oxford_sample, "images"))
        and encoder_weights
        and os.path.isfile(encoder_weights)
    ):
        # `make accuracy`'s recipe with fewer fine-tuning epochs, to stay within minutes.
        config = TrainConfig(
            dataset="oxford_iiit_pet",
            data_dir=oxford_sample,
            encoder_weights=encoder_weights,
            image_size=96 if quick else 128,
            serve_image_size=None if quick else 160,
            tta_flip=not quick,
            alpha=1.0,
            epochs=1 if quick else 3,
            fine_tune_epochs=0 if quick else 18,
            batch_size=8,
            learning_rate=1e-3,
            fine_tune_learning_rate=2e-4,
            lr_schedule="cosine",
            steps_per_epoch=2 if quick else None,
            min_crop_scale=0.7,
            colour_jitter=0.1,
            validation_freq=1 if quick else 3,
            plot_examples=3,
            serving_formats=_cpu_formats(),
        )
        return DemoPlan(
            "Oxford-IIIT Pet sample (trainval) with ImageNet MobileNetV2 weights",
            config,
            oxford_sample,
        )
    config = TrainConfig(
        dataset="synthetic",
        synthetic_count=64 if quick else 256,
        encoder_weights="none",
        image_size=64,
        alpha=0.35,
        epochs=1 if quick else 15,
        batch_size=16,
        steps_per_epoch=2 if quick else None,
        plot_examples=3,
        serving_formats=_cpu_formats(),
    )
    return DemoPlan("synthetic pets, random initialisation (no shared data found)", config, None)


def fine_tune_step_seconds(config: TrainConfig) -> float:
    """Seconds per fine-tuning step of ``config``'s training on this machine.

    A few steps of the whole network (encoder unfrozen) on the training
    pipeline's own batches, decoding and augmentation included (on a small
    machine they take the same cores as the model), after two steps that
    trace and warm up.
    """
    from petseg.training.inputs import load_datasets
    from petseg.training.loop import compile_model, training_batches
    from petseg.training.model import build_unet

    batches = iter(training_batches(config, load_datasets(config), config.batch_size))
    model = build_unet(
        config.image_size, alpha=config.alpha, encoder_weights=None, trainable_encoder=True
    )
    compile_model(model, config, config.fine_tune_learning_rate, phase_steps=TIMED_STEPS + 2)
    for _ in range(2):
        model.train_on_batch(*next(batches))
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        model.train_on_batch(*next(batches))
    return (time.perf_counter() - started) / TIMED_STEPS


def fit_to_budget(config: TrainConfig, train_examples: int, budget_s: float) -> TrainConfig:
    """``config`` with as many fine-tuning epochs as fit ``budget_s`` on this machine.

    Every epoch, frozen or not, is costed as a fine-tuning one (the frozen
    ones are cheaper), times :data:`EPOCH_OVERHEAD` for what an epoch does
    beside its steps: validation, checkpoints, the prediction panel.
    """
    from petseg.training.loop import epoch_steps

    # The training split is what the validation fraction leaves of the examples.
    steps = epoch_steps(config, int(train_examples * (1 - config.val_fraction)), config.batch_size)
    epoch_s = EPOCH_OVERHEAD * steps * fine_tune_step_seconds(config)
    fewest, most = FINE_TUNE_EPOCHS
    epochs = int(budget_s // epoch_s) - config.epochs
    return dataclasses.replace(config, fine_tune_epochs=max(fewest, min(most, epochs)))


def _fitted_config(plan_: DemoPlan, quick: bool) -> TrainConfig:
    """The plan's training, its fine-tuning fitted to the budget on the real photos."""
    if not plan_.holdout_source or quick:
        return plan_.config
    trainval = len(oxford_examples(plan_.holdout_source, "trainval"))
    config = fit_to_budget(plan_.config, trainval, TRAINING_BUDGET_S)
    print(
        f"[0/4] {config.fine_tune_epochs} fine-tuning epochs fit a training budget of "
        f"{TRAINING_BUDGET_S:.0f} s on this machine",
        flush=True,
    )
    return config


def write_holdout(plan_: DemoPlan, folder: str, count: int) -> str:
    """Writes the images to segment, in the Oxford layout; returns the folder."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    images = os.path.join(folder, "images")
    trimaps = os.path.join(folder, "annotations", "trimaps")
    os.makedirs(images)
    os.makedirs(trimaps)
    names = []
    if plan_.holdout_source:
        for example in oxford_examples(plan_.holdout_source, "test")[:count]:
            shutil.copy(example.image_path, images)
            shutil.copy(example.mask_path, trimaps)
            names.append(os.path.splitext(os.path.basename(example.image_path))[0])
    else:
        # Seed 1: the model trained on seed 0, so none of these were seen.
        for example in write_synthetic_files(images, trimaps, count, 160, seed=1, quality=92):
            names.append(os.path.splitext(os.path.basename(example.image_path))[0])
    with open(os.path.join(folder, "annotations", "test.txt"), "w", encoding="utf-8") as file:
        file.writelines(f"{name} 0 0 0\n" for name in names)
    return folder


def _segment(images: str, export_dir: str, output: str) -> dict:
    """The Beam job on ``images``, with overlays; returns its summary."""
    from petseg.cli.segment import run as run_segmentation

    # A new model each time: the previous demo's masks are replaced, not refused.
    flags = ["--input", images, "--model", export_dir, "--output", output]
    return run_segmentation([*flags, "--overlays", "--coco", "--overwrite"])


def _review(output: str, folder: str, count: int) -> str:
    """The ``count`` images the model was least sure of, as Label Studio tasks in ``folder``."""
    from petseg.labels.review import CONFIG_FILE, build_review, write_review

    tasks_path, _ = write_review(build_review(output, count), folder)
    return f"{tasks_path} (+ {CONFIG_FILE})"


def run_demo(workdir: str, quick: bool = False, holdout_count: int = 149) -> dict:
    """Runs the whole demo into ``workdir`` and returns its headline figures."""
    from petseg.report import build_report
    from petseg.training.evaluate import evaluate_export
    from petseg.training.loop import train_and_evaluate

    started = time.monotonic()
    plan_ = plan(
        os.environ.get("PETSEG_OXFORD_SAMPLE"), os.environ.get("PETSEG_ENCODER_WEIGHTS"), quick
    )
    config = _fitted_config(plan_, quick)
    print(f"[1/4] training on {plan_.description}", flush=True)
    training_dir = os.path.join(workdir, "training")
    if os.path.exists(training_dir):
        shutil.rmtree(training_dir)  # a demo starts fresh rather than resuming an old run
    result = train_and_evaluate(config, training_dir)

    holdout = write_holdout(plan_, os.path.join(workdir, "holdout"), holdout_count)
    output = os.path.join(workdir, "segmented")
    print(f"[2/4] segmenting {holdout}/images with the Beam job (DirectRunner)", flush=True)
    summary = _segment(os.path.join(holdout, "images"), result.export_dir, output)
    print("[3/4] scoring the masks against the held-out trimaps at original resolution", flush=True)
    scores = evaluate_export(
        result.export_dir, data_dir=holdout, split="test", backend=summary["backend"]
    )
    with open(os.path.join(workdir, "holdout_scores.json"), "w", encoding="utf-8") as file:
        json.dump(scores, file, indent=2)
    print("[4/4] writing the report and the least sure images' review tasks", flush=True)
    report = build_report(output, workdir=training_dir)
    review = _review(output, os.path.join(workdir, "review"), REVIEW_COUNT)
    return {
        "data": plan_.description,
        "export": result.export_dir,
        "masks": os.path.join(output, "masks"),
        "stats": os.path.join(output, "stats"),
        "errors": os.path.join(output, "errors"),
        "summary": os.path.join(output, "summary.json"),
        "coco": os.path.join(output, summary["coco"]["file"]),
        "report": report,
        "review": review,
        "pixel_accuracy": scores["pixel_accuracy"],
        "mean_iou": scores["mean_iou"],
        "iou": scores["iou"],
        "matched": summary["matched"],
        "masks_written": summary["masks_written"],
        "failed": summary["failed"],
        "reconciled": summary["reconciliation"]["ok"],
        "images_per_second": summary["images_per_second"],
        "backend": summary["backend"],
        "fine_tune_epochs": config.fine_tune_epochs,
        "total_seconds": round(time.monotonic() - started, 1),
    }


def print_headlines(figures: dict) -> None:
    iou = ", ".join(f"{name} {value:.3f}" for name, value in figures["iou"].items())
    print(
        "\npetseg demo finished in {total_seconds:.0f} s\n"
        "  trained on       {data}\n"
        "  model export     {export}\n"
        "  masks            {masks}\n"
        "  statistics       {stats}\n"
        "  errors           {errors}\n"
        "  summary          {summary}\n"
        "  COCO             {coco}\n"
        "  report           {report}\n"
        "  review tasks     {review}\n".format(**figures)
        + f"  held-out scores  pixel accuracy {figures['pixel_accuracy']:.3f}, "
        f"mean IoU {figures['mean_iou']:.3f} ({iou})\n"
        f"  Beam job         {figures['masks_written']} masks written, {figures['failed']} failed, "
        f"of {figures['matched']} matched (reconciled: {figures['reconciled']}), "
        f"{figures['images_per_second']:.1f} images/s on {figures['backend']}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags."""
    parser = StrictArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo", help="where everything is written")
    parser.add_argument(
        "--quick", action="store_true", help="a few training steps only (smoke test)"
    )
    parser.add_argument("--holdout-count", type=int, default=149, help="images to segment")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``make demo``: runs the demo and prints its figures; 1 if the job did not reconcile."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    figures = run_demo(args.workdir, quick=args.quick, holdout_count=args.holdout_count)
    print_headlines(figures)
    return 0 if figures["reconciled"] else 1


if __name__ == "__main__":
    sys.exit(main())
