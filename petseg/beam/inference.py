"""RunInference on an export (ARCHITECTURE.md, contract 2), on the backend the job names.

Beam's stock ``TFModelHandlerTensor`` loads models with
``tf.keras.models.load_model``, which Keras 3 cannot use on a SavedModel, so
the project brings its own :class:`PetsegModelHandler`. It loads the export
on its backend through :func:`petseg.serving.backends.load_runtime` (the
SavedModel's ``serving_default`` with ``tf.saved_model.load``, or its OpenVINO
or ONNX format); RunInference keeps one loaded model per worker process in
Beam's shared handle, and every thread of that process uses it.

Nothing is dead-lettered here: every image reaching the model is already a
valid ``uint8 [S, S, 3]`` array, so a failing batch (a model that cannot be
loaded, a device out of memory) is the environment's fault. It fails the
bundle, the runner retries it, and if it persists the job fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from petseg.beam.faults import environment_fault
from petseg.serving.backends import TENSORFLOW, Runtime

METRICS_NAMESPACE = "petseg_inference"


def grow_gpu_memory() -> None:
    """Lets TensorFlow take GPU memory as it needs it, not all of it at once.

    By default the first TensorFlow process on a GPU reserves nearly all of
    its memory, and every other SDK process of the worker then fails to
    start the model. Called before the model loads; a no-op without GPUs.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # The device is initialized already: too late, and harmless.
            pass


class ServingModel:
    """A loaded runtime (:mod:`petseg.serving.backends`) and its model's metadata.

    A class rather than a tuple because Beam's shared handle keeps a weak
    reference to whatever ``load_model`` returns.
    """

    def __init__(self, runtime: Runtime, model_id: str, image_size: int):
        self.runtime = runtime
        self.model_id = model_id
        self.image_size = image_size

    def identity(self) -> str:
        """The model's id (a method: a model shared across processes is reached by proxy)."""
        return self.model_id

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``uint8 [N, S, S, 3]`` -> ``float32 [N, S, S, C]``."""
        return self.runtime.probabilities(images)


class PetsegModelHandler(ModelHandler[np.ndarray, PredictionResult, ServingModel]):
    """Runs a petseg export on batches of ``uint8 [S, S, 3]`` images, on one backend.

    Each prediction is a :class:`PredictionResult` whose ``inference`` is the
    image's ``float32 [S, S, C]`` class probabilities and whose ``model_id``
    is the model's id from ``petseg.json``.

    Every batch runs at one fixed shape, padded with blank images when
    short: oneDNN and cuDNN pick different kernels for different batch sizes,
    which changes the last bits of the probabilities, and on a near tie that
    flips a pixel's class. At a fixed shape an image's mask does not depend on
    which images shared its batch, so every runner and every rerun writes the
    same bytes. Beam's ``OnnxModelHandlerNumpy`` does not pad to a fixed shape,
    returns one output, and tries CUDA first, so the ONNX backend runs here too.

    Args:
      export_dir: the export folder (local or any filesystem Beam reads).
      backend: ``tensorflow``, ``openvino`` or ``onnx`` (already resolved from ``auto``).
      min_batch_size: smallest batch ``BatchElements`` forms.
      max_batch_size: largest batch ``BatchElements`` forms.
      fixed_batch_size: the shape every batch is run at (padded or split);
        defaults to ``max_batch_size``; ``None`` with no ``max_batch_size``
        runs batches as they come.
      share_model: one model per worker machine, which its SDK processes
        share (RunInference's ``large_model``), instead of one per process:
        what a GPU worker wants, so the processes do not each hold a copy in
        the GPU's memory.
      model_copies: exactly this many models per machine, shared by its
        processes (RunInference's ``model_copies``; implies sharing).
      accelerator: Beam's accelerator resource hint for the inference step,
        e.g. ``type:nvidia-tesla-t4;count:1;install-nvidia-driver``.
    """

    def __init__(
        self,
        export_dir: str,
        *,
        backend: str = TENSORFLOW,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        fixed_batch_size: int | None = None,
        share_model: bool = False,
        model_copies: int | None = None,
        accelerator: str | None = None,
    ):
        # Batching and sharing are given through ModelHandler's public methods
        # below rather than its constructor, whose arguments vary across Beam releases.
        super().__init__()
        self._batching = {
            name: value
            for name, value in (
                ("min_batch_size", min_batch_size),
                ("max_batch_size", max_batch_size),
            )
            if value is not None
        }
        self._share_model = share_model or model_copies is not None
        self._model_copies = model_copies
        self._export_dir = export_dir
        self._backend = backend
        self._fixed_batch_size = fixed_batch_size or max_batch_size
        self._accelerator = accelerator

    def load_model(self) -> ServingModel:
        """Loads the model once per worker process (RunInference's shared handle).

        Raises:
          EnvironmentFault: the model cannot be loaded on this worker (its
            runtime not installed among them: the message names the extra).
        """
        from petseg.serving.backends import load_runtime

        try:
            if self._backend == TENSORFLOW:
                grow_gpu_memory()
            runtime, info = load_runtime(self._export_dir, self._backend, self._fixed_batch_size)
        except Exception as error:
            raise environment_fault(f"cannot load the model {self._export_dir}", error) from error
        return ServingModel(runtime, info.model_id, info.image_size)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: ServingModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Stacks the batch, runs the model at the fixed shape, and splits the answer per image."""
        images = np.stack(batch)
        model_id = model.identity()
        probabilities = np.concatenate(
            [model.probabilities(chunk)[:count] for chunk, count in self._chunks(images)]
        )
        return [
            PredictionResult(example, probability, model_id)
            for example, probability in zip(batch, probabilities, strict=True)
        ]

    def _chunks(self, images: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        size = self._fixed_batch_size or len(images)
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            count = len(chunk)
            if count < size:
                padding = np.zeros((size - count, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            yield chunk, count

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(example.nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def get_resource_hints(self) -> dict[str, str]:
        return {"accelerator": self._accelerator} if self._accelerator else {}

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return dict(self._batching)

    def share_model_across_processes(self) -> bool:
        return self._share_model

    def model_copies(self) -> int:
        return self._model_copies or 1


class InferProbabilities(beam.PTransform):
    """``(ImageKey, uint8 [S, S, 3])`` -> ``(ImageKey, PredictionResult)`` via RunInference.

    Wraps any unkeyed handler of image arrays in Beam's ``KeyedModelHandler``
    so each result keeps its key. A failed batch fails its bundle (see the
    module docstring).

    Args:
      model_handler: an unkeyed handler, e.g. :class:`PetsegModelHandler`.

    Returns the keyed predictions.
    """

    def __init__(self, model_handler: ModelHandler):
        super().__init__()
        self._model_handler = model_handler

    def expand(self, inputs):
        return inputs | "RunInference" >> RunInference(KeyedModelHandler(self._model_handler))
