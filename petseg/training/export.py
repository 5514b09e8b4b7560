"""Writing the export: SavedModel + ``model.keras`` + ``petseg.json`` (ARCHITECTURE.md 2-3).

The contract of what is written, and the loading that the job's workers
and evaluation run, live in :mod:`petseg.serving.export`, which never
imports Keras; this module builds the serving function from a Keras model.
The SavedModel runs the network with its batch normalizations
folded into their convolutions (:mod:`petseg.training.folding`), which makes it
quicker for every worker to load; ``model.keras`` keeps the network as it
trains.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from typing import Any

import keras
import tensorflow as tf

import petseg
from petseg.serving.export import FORMAT_VERSION, KERAS_FILE, METADATA_FILE, SIGNATURE
from petseg.storage import staged_directory
from petseg.training.folding import fold_batch_norm


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
      folded: ``model`` is already :func:`~petseg.training.folding.fold_batch_norm`'s output.
    """
    network = model if folded else fold_batch_norm(model)
    return tf.function(
        _serve_python(network, flip_tta),
        input_signature=serving_signature(image_size),
        autograph=False,
    )


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
      model: a U-Net from :func:`petseg.training.model.build_unet`.
      export_dir: destination folder (replaced if it exists).
      metadata: extra ``petseg.json`` fields (class names, config, metrics...).
      flip_tta: serve the average of each image's and its mirror's probabilities.
      network: ``model`` folded already (:func:`~petseg.training.folding.fold_batch_norm`),
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
