"""Running an export's network on a runtime: TensorFlow, OpenVINO or ONNX Runtime.

The backends are ``tensorflow`` and one per serving format of
:mod:`petseg.serving.formats` (``openvino``, ``onnx``, ``openvino-int8``).

Every backend takes uint8 ``images [N, S, S, 3]`` and returns float32
``probabilities [N, S, S, C]``, so the job and evaluation treat them alike.
``tensorflow`` runs the SavedModel; ``openvino`` and ``onnx`` run the formats
:mod:`petseg.serving.formats` derived from it, once their files match their
SHA-256 in ``petseg.json``. A backend gives the same bytes for the same batch
every time (in any process); two backends may differ in the last bits of a
probability, which flips a pixel's class only on a near tie (docs/segment.md,
"Backends", gives the share measured).

``auto`` picks, for the worker's device, the fastest backend measured
(docs/benchmarks.md, "Backends") among those the export has a format for and
whose runtime is installed: on a GPU, TensorFlow; on a CPU, OpenVINO, then
ONNX Runtime, then TensorFlow. It never picks ``openvino-int8``, whose masks
differ more: that one is asked for by name.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any, Protocol

import numpy as np

from petseg.serving.export import (
    ExportError,
    ModelInfo,
    load_serving_model,
    local_copy,
    read_model_info,
)
from petseg.serving.formats import FORMATS, FormatError, verify_format

TENSORFLOW = "tensorflow"
AUTO = "auto"
BACKENDS = (TENSORFLOW, *FORMATS)
# Fastest first, as measured on CPU workers (docs/benchmarks.md, "Backends").
CPU_PREFERENCE = ("openvino", "onnx", TENSORFLOW)


class BackendUnavailable(ExportError):
    """The backend's runtime is not installed here, or the export lacks its format."""


class Runtime(Protocol):
    name: str

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``uint8 [N, S, S, 3]`` -> ``float32 [N, S, S, C]``."""


def runtime_installed(backend: str) -> bool:
    """Whether the runtime of ``backend`` can be imported in this process."""
    if backend == TENSORFLOW:
        return True
    return importlib.util.find_spec(FORMATS[backend].runtime_module) is not None


def choose_backend(requested: str, info: ModelInfo, gpu: bool = False) -> str:
    """The backend ``requested`` names, ``auto`` resolved (see the module docstring).

    Raises:
      BackendUnavailable: the export has no format for the backend requested.
    """
    formats = info.metadata.get("formats", {})
    if requested == AUTO:
        if gpu:
            return TENSORFLOW
        return next(
            name
            for name in CPU_PREFERENCE
            if name == TENSORFLOW or (name in formats and runtime_installed(name))
        )
    if requested not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {requested!r}; known: {', '.join(BACKENDS)}")
    if requested != TENSORFLOW and requested not in formats:
        raise _format_missing(info, requested)
    return requested


def _format_missing(info: ModelInfo, backend: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"{info.export_dir} has no {backend} format; add it with "
        f"'petseg export-formats {info.export_dir} --format {backend}'"
    )


def _require_runtime(backend: str) -> None:
    if not runtime_installed(backend):
        spec = FORMATS[backend]
        raise BackendUnavailable(
            f"the {backend} backend needs {spec.runtime_module}, which is not installed "
            f"here: install petseg[{spec.extra}]"
        )


class TensorFlowRuntime:
    """The SavedModel's ``serving_default``."""

    name = TENSORFLOW

    def __init__(self, function: Any):
        self._function = function

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        outputs = self._function(images=tf.constant(images, dtype=tf.uint8))
        return outputs["probabilities"].numpy()


class OpenVINORuntime:
    """The OpenVINO IR, compiled for the CPU at one batch shape (the job's fixed shape).

    An infer request is not safe to share between threads, and compiling is
    per process, so each thread of a worker process gets its own request of the
    one compiled model.
    """

    def __init__(
        self, model_file: str, image_size: int, batch_size: int | None, name: str = "openvino"
    ):
        import openvino as ov

        self.name = name
        core = ov.Core()
        model = core.read_model(model_file)
        if batch_size:
            model.reshape({"images": [batch_size, image_size, image_size, 3]})
        # LATENCY: one stream over every core for each call, which is what a batch
        # at a time from RunInference wants (THROUGHPUT's streams gained nothing).
        self._compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self._output = self._compiled.output("probabilities")
        self._requests = threading.local()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        result = request.infer({"images": images})
        # The result lives in the request's buffer, which the next call overwrites.
        return np.array(result[self._output], copy=True)


class OnnxRuntime:
    """The ONNX model in an ONNX Runtime session on the CPU (safe to share between threads)."""

    name = "onnx"

    def __init__(self, model_file: str):
        import onnxruntime

        self._session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run(["probabilities"], {"images": images})
        return probabilities


def load_runtime(
    export_dir: str, backend: str, batch_size: int | None = None
) -> tuple[Runtime, ModelInfo]:
    """Loads the export on ``backend`` (not ``auto``): the runtime and the model's metadata.

    Args:
      export_dir: the export folder, local or in a bucket (copied here first).
      backend: one of :data:`BACKENDS`.
      batch_size: the one batch size it will be called with, where the runtime
        compiles for a shape (OpenVINO); ``None``: any.

    Raises:
      BackendUnavailable: the runtime is not installed here, or the format is absent.
      ExportError: the export is unusable, or a format's files differ from their SHA-256.
    """
    if backend == TENSORFLOW:
        function, info = load_serving_model(export_dir)
        return TensorFlowRuntime(function), info
    _require_runtime(backend)
    # The driver checked the SavedModel's signature; petseg.json is enough here, and
    # reading the SavedModel would import TensorFlow, which these runtimes do without.
    info = read_model_info(export_dir)
    listing = info.metadata.get("formats", {}).get(backend)
    if listing is None:
        raise _format_missing(info, backend)
    model_file = verify_format(local_copy(export_dir), listing)
    try:
        if FORMATS[backend].runtime_module == "openvino":
            return OpenVINORuntime(model_file, info.image_size, batch_size, backend), info
        return OnnxRuntime(model_file), info
    except Exception as error:
        raise FormatError(f"{backend} cannot load {model_file}: {error}") from None
