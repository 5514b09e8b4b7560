"""The export contract: SavedModel + ``model.keras`` + ``petseg.json`` (ARCHITECTURE.md 2-3).

``serving_default`` takes uint8 ``images [N, S, S, 3]`` (already resized to
S) and returns float32 ``probabilities [N, S, S, C]`` and uint8 ``mask
[N, S, S]``. Beam workers load it with ``tf.saved_model.load``; they never
touch Keras. The SavedModel runs the network with its batch normalizations
folded into their convolutions (:mod:`petseg.folding`), which makes it
quicker for every worker to load; ``model.keras`` keeps the network as it
trains.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

import petseg
from petseg.folding import fold_batch_norm
from petseg.storage import download_folder, is_remote

METADATA_FILE = "petseg.json"
KERAS_FILE = "model.keras"
FORMAT_VERSION = 1
SIGNATURE = "serving_default"


class ExportError(ValueError):
    """An export directory that does not hold a usable petseg model."""


def package_versions() -> dict[str, str]:
    """Versions of the packages a model's behaviour depends on."""
    import apache_beam
    import numpy
    import PIL

    return {
        "petseg": petseg.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "apache_beam": apache_beam.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def serving_signature(image_size: int) -> list[tf.TensorSpec]:
    """The input signature of ``serving_default``: uint8 ``images [N, S, S, 3]``."""
    return [tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")]


def _serve_python(network: keras.Model, flip_tta: bool):
    # The body of ``serving_default``, before tracing; ``network`` is already folded.
    def probabilities_of(images):
        logits = network(images, training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    def serve(images):
        pixels = tf.cast(images, tf.float32)
        probabilities = probabilities_of(pixels)
        if flip_tta:
            mirrored = probabilities_of(tf.reverse(pixels, axis=[2]))
            probabilities = (probabilities + tf.reverse(mirrored, axis=[2])) / 2.0
        mask = tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)
        return {"probabilities": probabilities, "mask": mask}

    return serve


def serving_function(
    model: keras.Model, image_size: int, flip_tta: bool = False, folded: bool = False
) -> tf.types.experimental.PolymorphicFunction:
    """The ``serving_default`` function of the contract, wrapping ``model``.

    It runs what an export of ``model`` serves: ``model`` in inference mode,
    batch normalizations folded.

    Args:
      model: the U-Net, taking ``[N, image_size, image_size, 3]``.
      image_size: the signature's side S.
      flip_tta: average the probabilities of each image and of its mirror
        image (test-time augmentation; twice the compute, sharper borders).
      folded: ``model`` is already :func:`~petseg.folding.fold_batch_norm`'s output.
    """
    network = model if folded else fold_batch_norm(model)
    return tf.function(
        _serve_python(network, flip_tta),
        input_signature=serving_signature(image_size),
        autograph=False,
    )


@contextlib.contextmanager
def staged_directory(path: str, prefix: str) -> Iterator[str]:
    """A hidden sibling folder of ``path`` to fill, which then replaces ``path`` whole.

    On a clean exit the folder is renamed to ``path`` (an existing ``path``
    is removed first); on any error it is removed and ``path`` is left as
    it was. A reader of ``path`` finds the old folder or the new one, never
    a half-written mix.

    Args:
      path: the folder to write.
      prefix: the start of the hidden folder's name, a dot first.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield staging
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_model(
    model: keras.Model,
    export_dir: str,
    metadata: dict[str, Any],
    flip_tta: bool = False,
    network: keras.Model | None = None,
) -> str:
    """Writes the SavedModel, ``model.keras`` and ``petseg.json`` to ``export_dir``.

    The SavedModel serves ``model`` with its batch normalizations folded
    into their convolutions (fewer variables and a smaller graph to load,
    the same answers up to float rounding); ``model.keras`` is ``model``
    itself, to train on. The export is assembled in a sibling temporary
    folder and renamed into place, so ``export_dir`` is either the previous
    export or the new one, never a half-written mix.

    Args:
      model: a U-Net from :func:`petseg.model.build_unet`.
      export_dir: destination folder (replaced if it exists).
      metadata: extra ``petseg.json`` fields (class names, config, metrics...).
      flip_tta: serve the average of each image's and its mirror's probabilities.
      network: ``model`` folded already (:func:`~petseg.folding.fold_batch_norm`),
        when the caller has it; otherwise it is folded here.

    Returns:
      ``export_dir``.
    """
    image_size = int(model.input_shape[1])
    num_classes = int(model.output_shape[-1])
    with staged_directory(export_dir, ".export-") as staging:
        # The archive saves every variable the endpoint reads, each once. It
        # does not ``track(model)``: that would save each weight a second time,
        # through its ``keras.Variable`` wrapper (keras-team/keras#23553),
        # doubling the files and the memory of every process that loads them.
        # Given the Python function and its signature, the archive traces
        # ``serving_default`` once; handed a ``tf.function`` it traces it again
        # and the SavedModel holds two copies of the graph.
        archive = keras.export.ExportArchive()
        archive.add_endpoint(
            SIGNATURE,
            _serve_python(network if network is not None else fold_batch_norm(model), flip_tta),
            input_signature=serving_signature(image_size),
        )
        archive.write_out(staging, verbose=False)
        model.save(os.path.join(staging, KERAS_FILE))
        document = {
            "format_version": FORMAT_VERSION,
            "image_size": image_size,
            "num_classes": num_classes,
            "test_time_augmentation": ["horizontal_flip"] if flip_tta else [],
            "batch_norm_folded": True,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "versions": package_versions(),
            **metadata,
        }
        with open(os.path.join(staging, METADATA_FILE), "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, sort_keys=True)
    return export_dir


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
        from petseg.beam.io import is_present

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
        or images.dtype != tf.uint8.as_datatype_enum
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
    try:
        loaded = tf.saved_model.load(local_copy(export_dir))
        function = loaded.signatures[SIGNATURE]
    except Exception as error:
        raise ExportError(f"cannot load SavedModel {export_dir}: {error}") from None
    # Keep the loaded object alive as long as the function is used.
    function._petseg_loaded = loaded
    return function, info
