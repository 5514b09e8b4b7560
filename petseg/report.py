"""``OUT/report.html``: one self-contained page that explains a segmentation run.

Everything the page shows is embedded (images as data URIs, charts as PNGs),
so it opens offline, from an e-mail, or from a bucket download. It reads only
the job's contracts (summary.json, stats/, errors/, masks/) and, for a
training workdir, the plots training wrote.
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image
from tqdm import tqdm

from petseg.beam.layout import REPORT_FILE
from petseg.beam.tables import read_table
from petseg.drawing import class_colour, encode_overlay
from petseg.imageio import decode_image, resize_image, resize_mask

THUMBNAIL_SIDE = 240


class ReportError(ValueError):
    """A folder that does not hold a segmentation run."""


def _read_records(folder: str) -> list[dict[str, Any]]:
    # JSON Lines or Parquet shards, whichever --stats-format the run wrote.
    paths = [
        *glob.glob(os.path.join(folder, "*.jsonl")),
        *glob.glob(os.path.join(folder, "*.parquet")),
    ]
    return read_table(paths)


def load_run(output: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Reads ``(summary, per-image statistics, errors)`` of a run folder.

    Raises:
      ReportError: ``output`` has no ``summary.json``.
    """
    summary_path = os.path.join(output, "summary.json")
    if not os.path.isfile(summary_path):
        raise ReportError(f"{output} is not a segmentation output: no summary.json")
    with open(summary_path, encoding="utf-8") as file:
        summary = json.load(file)
    stats = _read_records(os.path.join(output, "stats"))
    errors = _read_records(os.path.join(output, "errors"))
    return summary, stats, errors


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def class_share_chart(summary: dict[str, Any]) -> bytes:
    """A bar chart of each class's share of all pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["class_names"])
    shares = [summary["pixel_fraction"][name] for name in names]
    colours = [np.array(class_colour(i)) / 255 for i in range(len(names))]
    figure, axes = plt.subplots(figsize=(5, 2.6))
    bars = axes.bar(names, shares, color=colours, edgecolor="black")
    axes.bar_label(bars, labels=[f"{share:.1%}" for share in shares])
    axes.set_ylim(0, max(max(shares, default=0) * 1.25, 0.05))
    axes.set_ylabel("share of pixels")
    axes.set_title("Pixels per class")
    return _figure_png(figure)


def pet_fraction_chart(summary: dict[str, Any]) -> bytes:
    """The histogram of each image's pet fraction, from the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histogram = summary["pet_fraction_histogram"]
    edges = histogram["bin_edges"]
    figure, axes = plt.subplots(figsize=(5, 2.6))
    axes.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", edgecolor="black")
    axes.set_xlabel("pet fraction of the image")
    axes.set_ylabel("images")
    axes.set_title("Pet fraction per image")
    return _figure_png(figure)


def overlay_thumbnail(record: dict[str, Any], output: str) -> bytes:
    """The input image with its mask blended in, shrunk for the page, as a JPEG."""
    with FileSystems.open(record["path"]) as file:
        image = decode_image(file.read())
    with open(os.path.join(output, record["mask_path"]), "rb") as file:
        mask = np.asarray(Image.open(file), dtype=np.uint8)
    height, width = mask.shape
    scale = THUMBNAIL_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image, mask = resize_image(image, size), resize_mask(mask, size)
    return encode_overlay(image, mask)


def _figure(uri: str, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _image_grid(title: str, records: Sequence[dict[str, Any]], output: str, progress: tqdm) -> str:
    cells = []
    for record in records:
        try:
            uri = _data_uri(overlay_thumbnail(record, output), "image/jpeg")
        except Exception as error:  # A vanished input costs a thumbnail, not the report.
            cells.append(
                f'<div class="missing">{html.escape(record["path"])}: '
                f"{html.escape(str(error))}</div>"
            )
        else:
            caption = (
                f"{os.path.basename(record['path'])} - pet {record['fractions'].get('pet', 0):.0%}, "
                f"confidence {record['mean_confidence']:.2f}"
            )
            cells.append(_figure(uri, caption, record["path"]))
        progress.update(1)
    body = "".join(cells) or "<p>None.</p>"
    return f'<h2>{html.escape(title)}</h2><div class="grid">{body}</div>'


def _figures_table(summary: dict[str, Any], errors: Sequence[dict[str, Any]]) -> str:
    reconciliation = summary.get("reconciliation", {})
    rows = [
        ("Model", summary.get("model_id", "?")),
        ("Files matched", summary.get("matched", "?")),
        ("Masks written", summary.get("masks_written", "?")),
        ("Failures", summary.get("failed", len(errors))),
        ("Reconciled", "yes" if reconciliation.get("ok") else "NO"),
        ("Mean confidence", f"{summary.get('mean_confidence', 0):.3f}"),
    ]
    if "wall_time_s" in summary:
        rows.append(("Wall time", f"{summary['wall_time_s']:.1f} s"))
    if "images_per_second" in summary:
        rows.append(("Throughput", f"{summary['images_per_second']:.2f} images/s"))
    cells = "".join(
        f'<tr><th>{html.escape(str(k))}</th><td class="figure">{html.escape(str(v))}</td></tr>'
        for k, v in rows
    )
    return f'<table class="figures">{cells}</table>'


def _error_table(errors: Sequence[dict[str, Any]]) -> str:
    if not errors:
        return "<h2>Errors</h2><p>No input failed.</p>"
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(error.get(key, '')))}</td>"
            for key in ("path", "stage", "error_type", "message")
        )
        + "</tr>"
        for error in errors
    )
    return (
        f"<h2>Errors ({len(errors)})</h2><table class=errors><tr><th>Path</th><th>Stage</th>"
        f"<th>Type</th><th>Message</th></tr>{rows}</table>"
    )


def _training_section(workdir: str) -> str:
    plots = os.path.join(workdir, "plots")
    panels = sorted(glob.glob(os.path.join(plots, "epoch_*.png")))
    chosen = [
        (os.path.join(plots, "curves.png"), "Loss and mean IoU per epoch"),
        (os.path.join(plots, "confusion_matrix.png"), "Confusion matrix on the evaluation split"),
    ]
    if panels:
        chosen.append(
            (panels[-1], f"Predictions after the last epoch ({os.path.basename(panels[-1])})")
        )
    figures = []
    for path, caption in chosen:
        if os.path.isfile(path):
            with open(path, "rb") as file:
                figures.append(_figure(_data_uri(file.read(), "image/png"), caption, caption))
    metrics = ""
    history = os.path.join(workdir, "export", "petseg.json")
    if os.path.isfile(history):
        with open(history, encoding="utf-8") as file:
            evaluation = json.load(file).get("metrics") or {}
        if evaluation:
            metrics = "<pre>" + html.escape(json.dumps(evaluation, indent=2)) + "</pre>"
    if not figures and not metrics:
        return ""
    return f'<h2>Training</h2>{metrics}<div class="grid wide">{"".join(figures)}</div>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; border: 1px solid #ddd;
  text-align: left; vertical-align: top; }
table.figures td.figure { font-weight: bold; font-size: 1.1em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; } .grid.wide figure img { max-width: 560px; }
figure { margin: 0; max-width: 260px; } .grid.wide figure { max-width: 580px; }
figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.8em; color: #555; overflow-wrap: anywhere; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 6px; color: #fff;
  text-shadow: 0 0 2px #000; }
.missing { color: #a00; font-size: 0.8em; }
"""


def _class_charts(summary: dict) -> str:
    """The report's class share and pet fraction charts, as one HTML section."""
    return (
        '<h2>Classes</h2><div class="grid wide">'
        + _figure(
            _data_uri(class_share_chart(summary), "image/png"),
            "Share of all pixels per class",
            "class shares",
        )
        + _figure(
            _data_uri(pet_fraction_chart(summary), "image/png"),
            "Images by pet fraction",
            "pet fraction histogram",
        )
        + "</div>"
    )


def build_report(
    output: str,
    workdir: str | None = None,
    samples: int = 12,
    worst: int = 8,
    show_progress: bool = True,
) -> str:
    """Writes ``output/report.html`` and returns its path.

    Args:
      output: the segmentation job's ``--output`` folder (local).
      workdir: a training workdir whose plots to include, if any.
      samples: overlays in the sample grid (the first images by path).
      worst: overlays of the least confident images.
      show_progress: draw a progress bar for the image work.

    Raises:
      ReportError: ``output`` is not a run folder.
    """
    summary, stats, errors = load_run(output)
    stats = sorted(stats, key=lambda record: record["path"])
    sample_records = stats[:samples]
    worst_records = sorted(stats, key=lambda record: (record["mean_confidence"], record["path"]))
    worst_records = worst_records[:worst]
    legend = "".join(
        f'<span style="background: rgb{class_colour(i)}">{html.escape(name)}</span>'
        for i, name in enumerate(summary.get("class_names", []))
    )
    with tqdm(
        total=len(sample_records) + len(worst_records),
        desc="report images",
        unit="image",
        disable=not show_progress,
    ) as progress:
        samples_html = _image_grid("Sample masks", sample_records, output, progress)
        worst_html = _image_grid("Least confident images", worst_records, output, progress)
    charts = _class_charts(summary) if summary.get("images") else ""
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>petseg report: {html.escape(os.path.basename(os.path.abspath(output)))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>petseg segmentation report</h1><p>{html.escape(os.path.abspath(output))}</p>"
        f'<h2>Summary</h2>{_figures_table(summary, errors)}<p class="legend">{legend}</p>'
        f"{charts}{samples_html}{worst_html}{_error_table(errors)}"
        f"{_training_section(workdir) if workdir else ''}"
        "</body></html>"
    )
    path = os.path.join(output, REPORT_FILE)
    staging = path + ".tmp"
    with open(staging, "w", encoding="utf-8") as file:
        file.write(page)
    os.replace(staging, path)
    return path
