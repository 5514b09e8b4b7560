"""Serving formats beside the SavedModel: the same network for other CPU runtimes.

The SavedModel stays the contract (ARCHITECTURE.md 2). A format is derived
from its ``serving_default`` whole, input scaling and flip averaging
included, so it takes the same uint8 ``images [N, S, S, 3]`` and returns the
same ``probabilities`` and ``mask``:

- ``openvino``: OpenVINO IR (``openvino/model.xml`` and ``.bin``), converted
  with ``openvino.convert_model`` and saved with float32 weights (no fp16
  compression, which would change the probabilities' last bits).
- ``onnx``: ONNX (``onnx/model.onnx``), converted by tf2onnx.
- ``openvino-int8``: the OpenVINO IR quantized to int8 after training (NNCF's
  static post-training quantization, calibrated on images the caller gives,
  decoded as the job decodes them). Opt-in: its masks differ from the
  SavedModel's in more pixels (docs/benchmarks.md, "Backends", per class), and
  it pays on CPUs with VNNI or AMX int8 instructions.

``petseg.json`` lists each format under ``formats``: its files with their
SHA-256, and the converter's version. Which runtime is fastest is measured
(docs/benchmarks.md, "Backends"); :mod:`petseg.serving.backends` runs them.
Adding a format to an existing export is ``petseg export-formats MODEL``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from petseg.serving.export import METADATA_FILE, ExportError, check_export
from petseg.storage import is_remote, staged_directory

# tf2onnx's default opset is older; 17 is what ONNX Runtime and tf2onnx 1.17 both run.
ONNX_OPSET = 17


@dataclass(frozen=True)
class ServingFormat:
    """One runtime's format of the serving network."""

    name: str
    folder: str  # under the export
    model_file: str  # the file a runtime opens, in ``folder``
    converter: str  # the distribution that converts the SavedModel
    runtime_module: str  # what a worker imports to run it
    extra: str  # the petseg extra that installs that runtime


FORMATS = {
    "openvino": ServingFormat(
        "openvino", "openvino", "model.xml", "openvino", "openvino", "openvino"
    ),
    "onnx": ServingFormat("onnx", "onnx", "model.onnx", "tf2onnx", "onnxruntime", "onnx"),
    "openvino-int8": ServingFormat(
        "openvino-int8", "openvino-int8", "model.xml", "nncf", "openvino", "openvino"
    ),
}
# The formats a conversion needs calibration images for, and how many it uses by default.
CALIBRATED = frozenset({"openvino-int8"})
CALIBRATION_IMAGES = 64


class FormatError(ExportError):
    """A serving format that cannot be written, or whose files do not match ``petseg.json``."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert_openvino(export_dir: str, folder: str, calibration=None) -> None:
    import openvino as ov

    model = ov.convert_model(export_dir)
    ov.save_model(model, os.path.join(folder, "model.xml"), compress_to_fp16=False)


def _convert_onnx(export_dir: str, folder: str, calibration=None) -> None:
    # tf2onnx converts a SavedModel from its command line only; in a child process the
    # conversion's graphs also leave this process's memory with it.
    command = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        *("--saved-model", export_dir, "--signature_def", "serving_default"),
        *("--opset", str(ONNX_OPSET), "--output", os.path.join(folder, "model.onnx")),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FormatError(f"tf2onnx could not convert {export_dir}: {last}")


def calibration_batch(folder: str, image_size: int, count: int = CALIBRATION_IMAGES):
    """The first ``count`` images below ``folder`` (sorted by path) that decode, as the
    job feeds them to the model: ``uint8 [count, S, S, 3]``.

    Raises:
      FormatError: the folder holds no image that decodes.
    """
    import numpy as np

    from petseg.imageio import ImageDecodeError, decode_resized

    images = []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if len(images) == count:
                break
            try:
                with open(os.path.join(root, name), "rb") as file:
                    images.append(decode_resized(file.read(), image_size)[0])
            except (OSError, ImageDecodeError):
                continue
    if not images:
        raise FormatError(f"no calibration image decodes below {folder}")
    return np.stack(images)


def _convert_openvino_int8(export_dir: str, folder: str, calibration) -> None:
    import nncf
    import openvino as ov

    # One image a step: the statistics do not depend on how calibration is batched.
    dataset = nncf.Dataset(list(calibration), lambda image: {"images": image[None]})
    model = nncf.quantize(ov.convert_model(export_dir), dataset, subset_size=len(calibration))
    ov.save_model(model, os.path.join(folder, "model.xml"), compress_to_fp16=False)


# Format -> (export folder, folder to fill, calibration images or None).
_CONVERTERS = {
    "openvino": _convert_openvino,
    "onnx": _convert_onnx,
    "openvino-int8": _convert_openvino_int8,
}


def converter_version(name: str) -> str:
    """``"openvino 2026.4.1"``: the converter of format ``name`` and its version here.

    Raises:
      FormatError: the converter is not installed.
    """
    spec = FORMATS[name]
    version = _installed_version(spec.converter)
    if version is None:
        raise FormatError(
            f"writing the {name} format needs {spec.converter}: install petseg[train,{spec.extra}]"
        )
    return f"{spec.converter} {version}"


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_formats() -> tuple[str, ...]:
    """The formats whose converter is installed here."""
    return tuple(name for name, spec in FORMATS.items() if _installed_version(spec.converter))


def _write_format(export_dir: str, name: str, calibration) -> dict:
    """Writes format ``name``'s folder whole; returns its listing in ``petseg.json``."""
    spec = FORMATS[name]
    target = os.path.join(export_dir, spec.folder)
    with staged_directory(target, ".convert-") as staging:
        _CONVERTERS[name](export_dir, staging, calibration)
    listing = {
        "file": f"{spec.folder}/{spec.model_file}",
        "sha256": {
            f"{spec.folder}/{entry}": sha256_of(os.path.join(target, entry))
            for entry in sorted(os.listdir(target))
        },
    }
    if name in CALIBRATED:
        listing["calibration_images"] = len(calibration)
    return listing


def _replace_json(path: str, document: dict) -> None:
    """Replaces ``path`` with ``document`` in one rename."""
    with tempfile.NamedTemporaryFile(
        "w", dir=os.path.dirname(path), prefix=".petseg-json-", delete=False, encoding="utf-8"
    ) as file:
        json.dump(document, file, indent=2, sort_keys=True)
    os.chmod(file.name, 0o644)  # as open() wrote it; a temporary file is the owner's alone
    os.replace(file.name, path)


def write_formats(
    export_dir: str, names: tuple[str, ...], calibration_dir: str | None = None
) -> dict[str, dict]:
    """Converts the export's SavedModel into each format of ``names`` and lists them in
    ``petseg.json``; formats already there are made again.

    Each format's folder is written whole or not at all, and ``petseg.json`` is replaced
    in one rename once every format is in place.

    Args:
      export_dir: a local export folder.
      names: the formats to write (:data:`FORMATS`).
      calibration_dir: images to calibrate the formats of :data:`CALIBRATED` on (the
        first :data:`CALIBRATION_IMAGES`); training images, not the test split.

    Returns:
      ``petseg.json``'s ``formats``.

    Raises:
      FormatError: an unknown format, a converter not installed, a conversion
        that failed, calibration images missing, or an export in a bucket
        (convert a local copy).
      ExportError: the export is unusable.
    """
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise FormatError(f"unknown serving format(s) {unknown}; known: {sorted(FORMATS)}")
    if is_remote(export_dir):
        raise FormatError(f"{export_dir} is in a bucket: add formats to a local copy")
    info = check_export(export_dir)
    versions = {name: converter_version(name) for name in names}
    calibration = None
    if CALIBRATED & set(names):
        if not calibration_dir:
            raise FormatError(
                f"{', '.join(sorted(CALIBRATED & set(names)))} needs calibration images "
                "(--calibration-images DIR: training images)"
            )
        calibration = calibration_batch(calibration_dir, info.image_size)
    metadata_path = os.path.join(export_dir, METADATA_FILE)
    with open(metadata_path, encoding="utf-8") as file:
        document = json.load(file)
    formats = dict(document.get("formats", {}))
    for name in names:
        formats[name] = {
            **_write_format(export_dir, name, calibration),
            "converter": versions[name],
        }
    _replace_json(metadata_path, {**document, "formats": formats})
    return formats


def verify_format(export_dir: str, listing: dict) -> str:
    """The path of a listed format's model file, once every file of it matches its
    SHA-256 in ``petseg.json``.

    Raises:
      FormatError: a file is missing or differs.
    """
    for relative, expected in listing["sha256"].items():
        path = os.path.join(export_dir, relative)
        if not os.path.isfile(path):
            raise FormatError(f"{export_dir}: {relative} is missing")
        if sha256_of(path) != expected:
            raise FormatError(f"{export_dir}: {relative} does not match its SHA-256 in petseg.json")
    return os.path.join(export_dir, listing["file"])
