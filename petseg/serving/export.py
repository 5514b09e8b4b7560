"""Reading and loading a petseg export: what the job's workers and evaluation run.

An export (ARCHITECTURE.md 2-3) is a SavedModel, ``model.keras`` and
``petseg.json``. ``serving_default`` takes uint8 ``images [N, S, S, 3]``
(already resized to S) and returns float32 ``probabilities [N, S, S, C]``
and uint8 ``mask [N, S, S]``. This module loads it with
``tf.saved_model.load`` and never imports Keras: a worker that serves the
model imports TensorFlow and Beam's filesystems, nothing of training; reading
and checking an export does not import TensorFlow at all.
:mod:`petseg.training.export` writes exports.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from petseg.storage import download_folder, is_present, is_remote, staged_directory

METADATA_FILE = "petseg.json"
KERAS_FILE = "model.keras"
FORMAT_VERSION = 1
SIGNATURE = "serving_default"
# TensorFlow's DataType enum value of uint8 (types.proto), without importing TensorFlow.
DT_UINT8 = 4


class ExportError(ValueError):
    """An export directory that does not hold a usable petseg model."""


@dataclass(frozen=True)
class ModelInfo:
    """What a consumer needs to know about an export, read from ``petseg.json``."""

    export_dir: str
    image_size: int
    class_names: tuple[str, ...]
    model_id: str
    metadata: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def read_model_info(export_dir: str) -> ModelInfo:
    """Reads and checks ``petseg.json``; works on local paths and Beam filesystems.

    Raises:
      ExportError: missing or malformed metadata.
    """
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(export_dir, METADATA_FILE)
    if not FileSystems.exists(FileSystems.join(export_dir, "saved_model.pb")):
        if not is_present(export_dir, folder=True):
            raise ExportError(f"model directory not found: {export_dir}")
        raise ExportError(f"{export_dir} is not a SavedModel (no saved_model.pb)")
    if not FileSystems.exists(path):
        raise ExportError(f"{export_dir} has no {METADATA_FILE}; export it with train.py")
    try:
        with FileSystems.open(path) as file:
            document = json.loads(file.read().decode("utf-8"))
        image_size = int(document["image_size"])
        class_names = tuple(str(name) for name in document["class_names"])
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path} is malformed: {type(error).__name__}: {error}") from None
    if int(document.get("format_version", 0)) > FORMAT_VERSION:
        raise ExportError(
            f"{path} has format_version {document['format_version']}, newer than this "
            f"petseg ({FORMAT_VERSION}); upgrade petseg"
        )
    model_id = str(document.get("model_id") or f"{os.path.basename(export_dir.rstrip('/'))}")
    return ModelInfo(export_dir, image_size, class_names, model_id, document)


def read_meta_graph(export_dir: str):
    """The SavedModel's ``MetaGraphDef`` (signatures, graph, function library), read
    from ``saved_model.pb`` alone, without loading any function.

    Raises:
      ExportError: the file cannot be read or parsed.
    """
    from apache_beam.io.filesystems import FileSystems
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        with FileSystems.open(FileSystems.join(export_dir, "saved_model.pb")) as file:
            saved_model.ParseFromString(file.read())
        return saved_model.meta_graphs[0]
    except Exception as error:
        raise ExportError(f"cannot read the SavedModel in {export_dir}: {error}") from None


def check_export(export_dir: str) -> ModelInfo:
    """Checks an export's signature against ``petseg.json`` without loading the model.

    Reads only the SavedModel's protocol buffer (milliseconds, where loading
    the functions takes seconds), so a driver can refuse a mismatched model
    before any worker starts.

    Raises:
      ExportError: the export is unusable or disagrees with its metadata.
    """
    info = read_model_info(export_dir)
    signatures = read_meta_graph(export_dir).signature_def
    if SIGNATURE not in signatures:
        raise ExportError(f"{export_dir} has no {SIGNATURE!r} signature")
    signature = signatures[SIGNATURE]
    images = signature.inputs.get("images")
    probabilities = signature.outputs.get("probabilities")
    if (
        images is None
        or images.dtype != DT_UINT8
        or probabilities is None
        or "mask" not in signature.outputs
    ):
        raise ExportError(
            f"{export_dir}: serving_default must take uint8 'images' and return "
            "'probabilities' and 'mask'"
        )
    side = [dim.size for dim in images.tensor_shape.dim][1:3]
    if side != [info.image_size, info.image_size]:
        raise ExportError(
            f"{export_dir}: the SavedModel takes {side[0]}x{side[1]} images but "
            f"petseg.json says {info.image_size}"
        )
    model_classes = probabilities.tensor_shape.dim[-1].size
    if model_classes != info.num_classes:
        raise ExportError(
            f"{export_dir}: the SavedModel outputs {model_classes} classes but petseg.json "
            f"names {info.num_classes}"
        )
    return info


# Remote export folder -> its copy on this machine's disk, one per process.
_LOCAL_COPIES: dict[str, str] = {}


def local_copy(export_dir: str) -> str:
    """``export_dir`` itself when local, else a copy on local disk made through Beam's filesystems.

    TensorFlow reads ``gs://`` but not ``s3://`` (nor any other Beam
    filesystem) without more packages; copying first through ``FileSystems``
    serves a model from wherever the job can read its images. The copy is
    made once per process, whole or not at all (:func:`staged_directory`).
    """
    if not is_remote(export_dir):
        return export_dir
    if export_dir in _LOCAL_COPIES:
        return _LOCAL_COPIES[export_dir]
    target = os.path.join(tempfile.mkdtemp(prefix="petseg-model-"), "export")
    with staged_directory(target, ".copy-") as staging:
        download_folder(export_dir, staging)
    _LOCAL_COPIES[export_dir] = target
    return target


def load_serving_model(export_dir: str) -> tuple[Any, ModelInfo]:
    """Loads the SavedModel's serving function, checked against ``petseg.json``.

    Returns:
      ``(serving_function, model_info)``; call the function with
      ``images=<uint8 tensor>``.

    Raises:
      ExportError: the export is unusable or disagrees with its metadata.
    """
    info = check_export(export_dir)
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(local_copy(export_dir))
        function = loaded.signatures[SIGNATURE]
    except Exception as error:
        raise ExportError(f"cannot load SavedModel {export_dir}: {error}") from None
    # Keep the loaded object alive as long as the function is used.
    function._petseg_loaded = loaded
    return function, info
