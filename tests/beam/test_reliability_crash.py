"""Crash safety: the job is killed (SIGKILL) mid-run, then rerun into the same OUT.

A killed run must leave no partial file under a final name: every mask
present decodes fully and is byte-identical to an uninterrupted run's, and
the temporary files a write leaves behind (``.NAME.tmp-HEX`` beside the
mask) do not look like masks. The rerun must then complete with masks,
statistics and errors byte-identical to an uninterrupted run into a fresh
folder, and the same summary apart from its timing and reuse fields, having
inferred only the images whose masks the killed run had not committed.
The job writes COCO too (``--coco``): the killed run leaves no ``coco.json``,
and the rerun's is byte-identical to the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from beam_jobs import segment as segment_job
from petseg.beam.layout import COCO_FILE, TEMP_MARKER
from tests.beam_helpers import job_argv, snapshot
from tests.conftest import REPO_ROOT as REPO
from tests.images import gradient, jpeg

IMAGES = 240
BAD_FILES = {"bad/empty.jpg": b"", "bad/text.png": b"not an image\n"}
BATCH = 4
# Kill once this share of the masks exists: the first mask, then further in.
KILL_POINTS = {"first-mask": 0.0, "a-third": 0.33, "two-thirds": 0.66}
# How a run went, not what it wrote: these alone may differ from an uninterrupted run's summary.
TIMING_FIELDS = ("wall_time_s", "images_per_second", "masks_reused", "masks_pruned")
TEMPORARY = re.compile(r"^\..+" + re.escape(TEMP_MARKER) + r"[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash") / "in"
    card = gradient(320, 240)
    for index in range(IMAGES):
        path = root / f"part{index % 4}" / f"photo{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = card if index % 2 else card[::-1]
        path.write_bytes(jpeg(((pixels.astype(int) + index) % 256).astype("uint8")))
    for relative, data in BAD_FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


def _argv(inputs, model_dir, output) -> list[str]:
    return job_argv(inputs, model_dir, output, "--coco", batch_size=BATCH)


def _summary_without_timing(output: pathlib.Path) -> dict:
    summary = json.loads((output / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in TIMING_FIELDS}


def _final_masks(output: pathlib.Path) -> list[pathlib.Path]:
    return [
        path
        for path in (output / "masks").rglob("*.png")
        if path.is_file() and not TEMPORARY.match(path.name)
    ]


def _without_temporaries(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if not TEMPORARY.match(name.split("/")[-1])}


@pytest.fixture(scope="module")
def reference(inputs, model_dir, tmp_path_factory):
    """An uninterrupted run into a fresh folder."""
    output = tmp_path_factory.mktemp("crash-reference") / "out"
    summary = segment_job.run(_argv(inputs, model_dir, output))
    assert summary["masks_written"] == IMAGES and summary["failed"] == len(BAD_FILES)
    return output


def _start_and_kill(inputs, model_dir, output, share: float, argv=None, images=IMAGES) -> int:
    """Starts the job in a subprocess and SIGKILLs it once ``share`` of the masks exist.

    Returns the number of final masks present when it was killed.
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = argv or _argv(inputs, model_dir, output)
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_jobs.segment", *argv],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    threshold = max(1, int(share * images))
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the job finished (exit {process.returncode}) before it was killed")
            if (output / "masks").is_dir() and len(_final_masks(output)) >= threshold:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"fewer than {threshold} masks after 240 s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return len(_final_masks(output))


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", sorted(KILL_POINTS))
def test_killed_run_leaves_no_partial_output_and_rerun_completes(
    kill_point, inputs, model_dir, reference, tmp_path
):
    output = tmp_path / "out"
    present = _start_and_kill(inputs, model_dir, output, KILL_POINTS[kill_point])
    assert 0 < present < IMAGES
    assert not (output / "summary.json").exists() and not (output / COCO_FILE).exists()

    expected = snapshot(reference)
    killed = snapshot(output)
    for name, data in killed.items():
        base = name.split("/")[-1]
        if TEMPORARY.match(base):
            # A write cut short: hidden, and not named like a mask (or anything else).
            assert not base.endswith((".png", ".jsonl", ".json")), name
            continue
        # Anything under a final name is complete: the very bytes of the reference.
        assert data == expected[name], name
        if name.endswith(".png"):
            with Image.open(output / name) as image:
                image.load()

    summary = segment_job.run(_argv(inputs, model_dir, output))
    assert summary["reconciliation"]["ok"] and summary["masks_written"] == IMAGES
    # Every mask the killed run committed is reused, not inferred again.
    assert summary["masks_reused"] >= present
    assert _without_temporaries(snapshot(output)) == expected
    assert _summary_without_timing(output) == _summary_without_timing(reference)
    assert (output / COCO_FILE).read_bytes() == (reference / COCO_FILE).read_bytes()


# A few thousand small images, killed at half: the rerun must infer only the rest.
MANY_IMAGES = 2000
MANY_BATCH = 16


@pytest.mark.slow
def test_a_rerun_after_a_kill_at_half_infers_only_the_rest(model_dir, tmp_path):
    inputs = tmp_path / "in"
    card = gradient(48, 36).astype(int)
    for index in range(MANY_IMAGES):
        path = inputs / f"batch{index % 20:02d}" / f"pet{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(((card + 3 * index) % 256).astype("uint8")))

    def argv(output):
        return job_argv(inputs, model_dir, output, batch_size=MANY_BATCH)

    reference = tmp_path / "reference"
    started = time.monotonic()
    segment_job.run(argv(reference))
    full_run_s = time.monotonic() - started

    output = tmp_path / "out"
    present = _start_and_kill(inputs, model_dir, output, 0.5, argv(output), MANY_IMAGES)
    started = time.monotonic()
    summary = segment_job.run(argv(output))
    rerun_s = time.monotonic() - started

    inferred = summary["masks_written"] - summary["masks_reused"]
    print(
        f"{MANY_IMAGES} images: full run {full_run_s:.1f} s; killed with {present} masks; "
        f"rerun {rerun_s:.1f} s, {summary['masks_reused']} reused, {inferred} inferred"
    )
    assert summary["masks_written"] == MANY_IMAGES and summary["reconciliation"]["ok"]
    assert summary["masks_reused"] >= present
    assert inferred <= MANY_IMAGES - present and inferred <= 0.55 * MANY_IMAGES
    assert _without_temporaries(snapshot(output)) == _without_temporaries(snapshot(reference))
    assert _summary_without_timing(output) == _summary_without_timing(reference)
