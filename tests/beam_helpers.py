"""Shared builders for the Beam job's tests: a tiny exported model and an image tree."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from tests.images import encode, gradient, jpeg, png

MODEL_SIZE = 64
MODEL_ID = "tiny-unet-test"
LOGIT_SCALE = 300.0


def export_tiny_model(export_dir: pathlib.Path) -> pathlib.Path:
    """A random 64 px U-Net (alpha 0.35) with sharpened logits, exported by ``export_model``."""
    import keras

    from petseg.classes import CLASS_NAMES
    from petseg.training.export import export_model
    from petseg.training.model import build_unet

    keras.utils.set_random_seed(7)
    model = build_unet(MODEL_SIZE, alpha=0.35, encoder_weights=None)
    # A random model is nearly uniform (every pixel a near tie); sharpening its
    # logits gives argmax margins far above float noise, so mask comparisons are exact.
    logits = model.get_layer("logits")
    kernel, *rest = logits.get_weights()
    logits.set_weights([kernel * LOGIT_SCALE, *rest])
    export_model(model, str(export_dir), {"class_names": list(CLASS_NAMES), "model_id": MODEL_ID})
    return export_dir


# Relative path -> (width, height) the mask must have, for every good image of the tree.
GOOD_IMAGES: dict[str, tuple[int, int]] = {
    "cat.jpg": (96, 72),
    "dogs/rex.png": (80, 60),
    "dogs/gray.png": (50, 40),
    "dogs/deep/rgba.png": (64, 48),
    # EXIF orientation 6 (rotate 90 degrees): stored 100 x 60, shown 60 x 100.
    "dogs/deep/rotated.jpg": (60, 100),
    "UPPER.JPEG": (40, 30),
    # Wins the mask path masks/collide/a.png over collide/a.png (the smaller path wins).
    "collide/a.jpg": (32, 24),
}
BAD_IMAGES: tuple[str, ...] = ("empty.jpg", "dogs/truncated.jpg", "notes/readme.jpg")
COLLISION_LOSERS: tuple[str, ...] = ("collide/a.png",)
# Not an image extension: ignored by the default --extensions, never matched.
IGNORED_FILES: tuple[str, ...] = ("notes/readme.txt",)


def write_image_tree(root: pathlib.Path) -> pathlib.Path:
    """A nested folder of good images (several formats and modes) and bad files."""
    files = {
        "cat.jpg": jpeg(gradient(96, 72)),
        "dogs/rex.png": png(gradient(80, 60)),
        "dogs/gray.png": png(gradient(50, 40), mode="L"),
        "dogs/deep/rgba.png": encode(
            Image.fromarray(np.dstack([gradient(64, 48), np.full((48, 64), 128, np.uint8)])), "PNG"
        ),
        "dogs/deep/rotated.jpg": jpeg(gradient(100, 60), orientation=6),
        "UPPER.JPEG": jpeg(255 - gradient(40, 30)),
        "empty.jpg": b"",
        "dogs/truncated.jpg": jpeg(gradient(90, 90))[:300],
        "notes/readme.jpg": b"this is a text file, not a picture\n",
        "notes/readme.txt": b"ignored\n",
        "collide/a.jpg": jpeg(gradient(32, 24)),
        "collide/a.png": png(gradient(32, 24)),
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def job_argv(inputs, model_dir, output, *extra: str, batch_size: int = 4) -> list[str]:
    """The segmentation job's flags for one input, quiet, at a fixed batch size."""
    return [
        "--input",
        str(inputs),
        "--model",
        str(model_dir),
        "--output",
        str(output),
        "--max-batch-size",
        str(batch_size),
        "--progress-interval",
        "0",
        *extra,
    ]


def shared_tiny_model(tmp_path_factory) -> pathlib.Path:
    """One tiny export per test session, whichever module asks first."""
    export_dir = tmp_path_factory.getbasetemp() / "beam-tiny-model"
    if not (export_dir / "petseg.json").exists():
        export_tiny_model(export_dir)
    return export_dir


def expected_mask(model, data: bytes, batch_size: int) -> np.ndarray:
    """What the model gives directly for one file: the job's decode to the model's size,
    fixed-shape batch (padded with zeros to ``batch_size``), upsample and argmax, without Beam."""
    import tensorflow as tf

    from petseg.beam.masks import segment
    from petseg.imageio import decode_resized

    pixels, (height, width) = decode_resized(data, MODEL_SIZE)
    batch = np.zeros((batch_size, MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
    batch[0] = pixels
    probabilities = model(images=tf.constant(batch))["probabilities"].numpy()[0]
    mask, _, _ = segment(probabilities, height, width)
    return mask


def snapshot(output: pathlib.Path) -> dict[str, bytes]:
    """Every mask, overlay, statistics, errors and COCO shard file below ``output``, by
    relative path."""
    return {
        str(path.relative_to(output)): path.read_bytes()
        for folder in ("masks", "overlays", "stats", "errors", "coco")
        for path in sorted((output / folder).rglob("*"))
        if path.is_file()
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Waits until ``localhost:port`` accepts connections (or the process dies)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on localhost:{port} after {timeout_s}s")


def start_service(arguments: list[str], port: int, log: pathlib.Path) -> subprocess.Popen:
    """Starts ``python -m ...`` from this venv with the venv's bin first on PATH."""
    environment = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)
    environment["PATH"] = bin_dir + os.pathsep + environment.get("PATH", "")
    repo = pathlib.Path(__file__).resolve().parents[1]
    environment["PYTHONPATH"] = str(repo) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handle = open(log, "wb")  # The process writes to it until teardown.
    process = subprocess.Popen(
        [sys.executable, "-m", *arguments],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=environment,
        cwd=repo,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_service(process)
        raise
    return process


def stop_service(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
