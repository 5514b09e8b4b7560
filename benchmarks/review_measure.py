"""Which measure of the model's doubt finds its worst masks: what ``petseg review`` ranks by.

python -m benchmarks.review_measure [--model runs/demo/training/export] [--data-dir DIR]
    [--split test] [--out benchmarks/results]

On an Oxford-layout folder's split (default: the shared sample, ``PETSEG_OXFORD_SAMPLE``)
and an export (default: the demo's, trained on the sample's trainval images), each image
is segmented as the job segments it (model-size input, probabilities upsampled to the
original size, argmax) and scored against its trimap (class = trimap value - 1). Per
image: the mean IoU over the classes present in the trimap or the mask, the pet IoU, and
three measures of doubt, each larger when the model is less sure:

- ``1 - mean confidence``: the job's per-image ``mean_confidence`` (the mean, over
  pixels, of the winning class's probability), already in every statistics table;
- ``border entropy``: the mean entropy of the class probabilities (divided by log C, so
  in [0, 1]) on the pixels within :data:`BAND_RADIUS` of a boundary between the mask's
  classes (the whole image when the mask has one class);
- ``low-confidence share``: the share of pixels whose winning probability is below
  :data:`LOW_CONFIDENCE`.

For each measure and N: the mean IoU of the N images it calls least sure against the
rest's, and its Spearman correlation with mean IoU over all images (negative: more
doubt, worse mask). The ``oracle`` row picks the N truly worst masks, the best any
measure could do.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from benchmarks import common

DEMO_MODEL = os.path.join("runs", "demo", "training", "export")
# Pixels this close (in pixels, square neighbourhood) to a class boundary form the band
# whose entropy is measured: about the half-width of the Oxford trimaps' border ring.
BAND_RADIUS = 4
# A pixel whose winning probability is below this is counted as unsure.
LOW_CONFIDENCE = 0.6
COUNTS = (10, 20, 30)
MEASURES = ("1 - mean confidence", "border entropy", "low-confidence share")
# Images per model call.
CHUNK = 16


def boundary_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (square neighbourhood) of a pixel whose right or lower
    neighbour has another class."""
    edge = np.zeros(mask.shape, bool)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    # A box filter over the edge map by summed-area table: any edge in the window.
    padded = np.pad(edge.astype(np.int32), radius + 1)
    table = padded.cumsum(0).cumsum(1)
    side = 2 * radius + 1
    window = (
        table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    )
    return window[: mask.shape[0], : mask.shape[1]] > 0


def image_iou(truth: np.ndarray, predicted: np.ndarray, classes: int) -> tuple[float, float]:
    """``(mean IoU over the classes in truth or prediction, pet IoU)`` of one image."""
    from petseg.training.metrics import confusion_matrix, iou_per_class

    iou = iou_per_class(confusion_matrix(truth, predicted, classes))
    return float(np.nanmean(iou)), float(np.nan_to_num(iou[0], nan=1.0))


def doubt(planes: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The mask and the three measures of one image's upsampled class planes ``[C, H, W]``."""
    from petseg.serving.upsample import mask_and_confidence_of_planes

    mask, confidence = mask_and_confidence_of_planes(planes)
    clipped = np.clip(planes, 1e-12, 1.0)
    entropy = -(clipped * np.log(clipped)).sum(axis=0) / np.log(len(planes))
    band = boundary_band(mask, BAND_RADIUS)
    measures = {
        "1 - mean confidence": 1.0 - float(np.mean(confidence, dtype=np.float64)),
        "border entropy": float(np.mean(entropy[band] if band.any() else entropy)),
        "low-confidence share": float(np.mean(confidence < LOW_CONFIDENCE)),
    }
    return mask, measures


def measure_images(model_dir: str, data_dir: str, split: str) -> list[dict]:
    """Each image's name, mean IoU, pet IoU and measures (see the module's docstring)."""
    from petseg.serving.backends import load_runtime
    from petseg.serving.upsample import upsample_planes
    from petseg.training.data.files import lookup_table, read_labelled
    from petseg.training.data.oxford import TRIMAP_TO_CLASS, oxford_examples

    runtime, info = load_runtime(model_dir, "tensorflow")
    examples = oxford_examples(data_dir, split)
    table = lookup_table(TRIMAP_TO_CLASS)
    rows = []
    for start in range(0, len(examples), CHUNK):
        chunk = examples[start : start + CHUNK]
        labelled = [read_labelled(example, table, info.image_size) for example in chunk]
        probabilities = runtime.probabilities(np.stack([pixels for pixels, _ in labelled]))
        for example, (_, truth), image in zip(chunk, labelled, probabilities, strict=True):
            mask, measures = doubt(upsample_planes(image, truth.shape))
            mean_iou, pet_iou = image_iou(truth, mask, info.num_classes)
            name = os.path.splitext(os.path.basename(example.image_path))[0]
            rows.append({"name": name, "mean_iou": mean_iou, "pet_iou": pet_iou, **measures})
    return rows


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on average ranks)."""
    return float(np.corrcoef(ranks(first), ranks(second))[0, 1])


def compare(rows: list[dict], counts: tuple[int, ...] = COUNTS) -> dict:
    """Per measure (and the oracle): for each N, the least sure N's mean IoU and pet IoU
    against the rest's, and the measure's Spearman correlation with mean IoU."""
    iou = np.array([row["mean_iou"] for row in rows])
    pet = np.array([row["pet_iou"] for row in rows])
    names = [row["name"] for row in rows]
    scores = {name: np.array([row[name] for row in rows]) for name in MEASURES}
    scores["oracle (worst IoU)"] = -iou
    results = {}
    for measure, score in scores.items():
        # Most doubt first; ties by name, as the review breaks them by path.
        order = sorted(range(len(rows)), key=lambda index: (-score[index], names[index]))
        by_count = {}
        for count in counts:
            picked = np.zeros(len(rows), bool)
            picked[order[:count]] = True
            by_count[str(count)] = {
                "picked_mean_iou": float(iou[picked].mean()),
                "rest_mean_iou": float(iou[~picked].mean()),
                "picked_pet_iou": float(pet[picked].mean()),
                "rest_pet_iou": float(pet[~picked].mean()),
            }
        results[measure] = {"spearman_mean_iou": spearman(score, iou), "by_count": by_count}
    return results


def markdown(results: dict) -> list[str]:
    """The comparison as a Markdown table: one row per measure."""
    counts = list(next(iter(results["measures"].values()))["by_count"])
    header = ("measure (N least sure vs rest)", "Spearman with mIoU")
    header += tuple(f"N={count}: mIoU picked / rest" for count in counts)
    header += tuple(f"N={count}: pet IoU picked / rest" for count in counts)
    rows = []
    for measure, figures in results["measures"].items():
        cells = [measure, f"{figures['spearman_mean_iou']:+.3f}"]
        for key in ("mean_iou", "pet_iou"):
            for count in counts:
                figure = figures["by_count"][count]
                cells.append(f"{figure[f'picked_{key}']:.3f} / {figure[f'rest_{key}']:.3f}")
        rows.append(tuple(cells))
    intro = (
        f"{results['images']} images of {results['data']} ({results['split']}), model "
        f"{results['model_id']}; all images: mean IoU {results['mean_iou']:.3f}, pet IoU "
        f"{results['pet_iou']:.3f}; band radius {BAND_RADIUS} px, low confidence < "
        f"{LOW_CONFIDENCE}; {results['seconds']:.0f} s."
    )
    return [intro, "", *common.table(header, rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.review_measure")
    parser.add_argument("--model", default=DEMO_MODEL, help="a petseg export")
    parser.add_argument("--data-dir", default=os.environ.get("PETSEG_OXFORD_SAMPLE"))
    parser.add_argument("--split", default="test", help="the Oxford split scored")
    parser.add_argument("--out", default=common.RESULTS_DIR, help="folder for the results")
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("give --data-dir or set PETSEG_OXFORD_SAMPLE")
    from petseg.serving.export import read_model_info

    started = time.perf_counter()
    rows = measure_images(args.model, args.data_dir, args.split)
    results = {
        "model_id": read_model_info(args.model).model_id,
        "data": args.data_dir,
        "split": args.split,
        "images": len(rows),
        "mean_iou": float(np.mean([row["mean_iou"] for row in rows])),
        "pet_iou": float(np.mean([row["pet_iou"] for row in rows])),
        "measures": compare(rows),
        "per_image": rows,
        "seconds": time.perf_counter() - started,
    }
    common.write_results(args.out, "review_measure", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
