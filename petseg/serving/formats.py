"""Serving formats beside the SavedModel: the same network for other CPU runtimes.

The SavedModel stays the contract (ARCHITECTURE.md 2). A format is derived
from its ``serving_default`` whole, input scaling and flip averaging
included, so it takes the same uint8 ``images [N, S, S, 3]`` and returns the
same ``probabilities`` and ``mask``:

- ``openvino``: OpenVINO IR (``openvino/model.xml`` and ``.bin``), converted
  with ``openvino.convert_model`` and saved with float32 weights (no fp16
  compression, which would change the probabilities' last bits).
- ``onnx``: ONNX (``onnx/model.onnx``), converted by tf2onnx.

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
}


class FormatError(ExportError):
    """A serving format that cannot be written, or whose files do not match ``petseg.json``."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert_openvino(export_dir: str, folder: str) -> None:
    import openvino as ov

    model = ov.convert_model(export_dir)
    ov.save_model(model, os.path.join(folder, "model.xml"), compress_to_fp16=False)


def _convert_onnx(export_dir: str, folder: str) -> None:
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


_CONVERTERS = {"openvino": _convert_openvino, "onnx": _convert_onnx}


def converter_version(name: str) -> str:
    """``"openvino 2026.4.1"``: the converter of format ``name`` and its version here.

    Raises:
      FormatError: the converter is not installed.
    """
    spec = FORMATS[name]
    try:
        return f"{spec.converter} {importlib.metadata.version(spec.converter)}"
    except importlib.metadata.PackageNotFoundError:
        raise FormatError(
            f"writing the {name} format needs {spec.converter}: install petseg[train,{spec.extra}]"
        ) from None


def installed_formats() -> tuple[str, ...]:
    """The formats whose converter is installed here."""
    found = []
    for name, spec in FORMATS.items():
        try:
            importlib.metadata.version(spec.converter)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def write_formats(export_dir: str, names: tuple[str, ...]) -> dict[str, dict]:
    """Converts the export's SavedModel into each format of ``names`` and lists them in
    ``petseg.json``; formats already there are made again.

    Each format's folder is written whole or not at all, and ``petseg.json`` is replaced
    in one rename once every format is in place.

    Returns:
      ``petseg.json``'s ``formats``.

    Raises:
      FormatError: an unknown format, a converter not installed, a conversion
        that failed, or an export in a bucket (convert a local copy).
      ExportError: the export is unusable.
    """
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise FormatError(f"unknown serving format(s) {unknown}; known: {sorted(FORMATS)}")
    if is_remote(export_dir):
        raise FormatError(f"{export_dir} is in a bucket: add formats to a local copy")
    check_export(export_dir)
    versions = {name: converter_version(name) for name in names}
    metadata_path = os.path.join(export_dir, METADATA_FILE)
    with open(metadata_path, encoding="utf-8") as file:
        document = json.load(file)
    formats = dict(document.get("formats", {}))
    for name in names:
        spec = FORMATS[name]
        target = os.path.join(export_dir, spec.folder)
        with staged_directory(target, ".convert-") as staging:
            _CONVERTERS[name](export_dir, staging)
        formats[name] = {
            "file": f"{spec.folder}/{spec.model_file}",
            "sha256": {
                f"{spec.folder}/{entry}": sha256_of(os.path.join(target, entry))
                for entry in sorted(os.listdir(target))
            },
            "converter": versions[name],
        }
    document["formats"] = formats
    with tempfile.NamedTemporaryFile(
        "w", dir=export_dir, prefix=".petseg-json-", delete=False, encoding="utf-8"
    ) as file:
        json.dump(document, file, indent=2, sort_keys=True)
    os.chmod(file.name, 0o644)  # as open() wrote it; a temporary file is the owner's alone
    os.replace(file.name, metadata_path)
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
