"""The segmentation job's configuration, checked before any pipeline starts.

Everything that can be known to be wrong on the submitting machine is
refused here with one clear sentence: flags out of range, a model folder
that is not a petseg export or whose SavedModel disagrees with its
``petseg.json``, inputs that match nothing, an output that cannot be
written or that overlaps an input. A fleet of workers is never
started to discover a typo.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apache_beam.io.filesystems import FileSystems

from petseg.beam.decode import DEFAULT_MAX_FILE_BYTES
from petseg.beam.io import (
    DEFAULT_EXTENSIONS,
    InputSpec,
    inside,
    is_remote,
    join_path,
    list_images,
    normalise_location,
    resolve_input,
)
from petseg.beam.progress import DEFAULT_INTERVAL_S
from petseg.beam.tables import FORMATS
from petseg.imageio import DEFAULT_MAX_PIXELS
from petseg.serving.backends import BACKENDS
from petseg.settings import option

if TYPE_CHECKING:
    from petseg.serving.export import ModelInfo

WRITE_CHECK_FILE = ".petseg-write-check"
# Images per inference batch: every batch runs at this one shape (see PetsegModelHandler).
DEFAULT_BATCH_SIZE = 32
# Statistics and errors JSON Lines shards hold about this many records each.
RECORDS_PER_SHARD = 100_000


class SegmentConfigError(ValueError):
    """A configuration the job refuses to start with; the message says what to fix."""


@dataclass(frozen=True)
class SegmentConfig:
    """The segmentation job's settings, as given; each field is also its flag.

    :func:`prepare_job` checks them and resolves them into a :class:`SegmentJob`.
    """

    input: tuple[str, ...] = option(
        (),
        "a folder (all images below it), a file or a glob pattern; repeatable",
        required=True,
    )
    model: str = option("", "export folder written by train.py", required=True)
    output: str = option("", "output folder OUT (local or a URL)", required=True)
    extensions: str = option(
        ",".join(DEFAULT_EXTENSIONS), "comma-separated file extensions to segment"
    )
    min_batch_size: int | None = option(
        None,
        "smallest inference batch (default: the --max-batch-size, since every batch is "
        "padded to it)",
    )
    max_batch_size: int = option(DEFAULT_BATCH_SIZE, "inference batch size")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "refuse images declaring more pixels")
    max_file_bytes: int = option(DEFAULT_MAX_FILE_BYTES, "refuse files larger than this")
    threads: int | None = option(
        None,
        "threads per worker process that read, decode, upsample and write images alongside "
        "the model (default: the cores available to each process; 1 on Dataflow, which runs "
        "one SDK process per vCPU; the cores shared out among --direct_num_workers)",
    )
    share_model: bool = option(
        False,
        "one model per worker machine, shared by its SDK processes (RunInference's "
        "large_model): for GPU workers, so each process does not hold a copy in GPU memory",
    )
    model_copies: int | None = option(
        None,
        "exactly this many models per worker machine, shared by its processes "
        "(RunInference's model_copies; implies --share-model)",
    )
    accelerator: str | None = option(
        None,
        "Beam resource hint for the inference step, e.g. "
        "'type:nvidia-tesla-t4;count:1;install-nvidia-driver'",
    )
    backend: str = option(
        "auto",
        "the runtime that runs the model: tensorflow (the SavedModel), openvino or onnx (the "
        "export's format of that name); auto: the fastest measured for the workers' device "
        "among the formats the export has and the runtimes installed (docs/segment.md, "
        "'Backends')",
        choices=("auto", *BACKENDS),
    )
    overlays: bool = option(False, "also write colour overlays under OUT/overlays/")
    coco: bool = option(
        False,
        "also write OUT/coco.json: COCO annotations, one per image and foreground class, "
        "with compressed RLE masks (docs/labels.md)",
    )
    coco_classes: str = option(
        "",
        "the classes --coco annotates, comma-separated (default: every class but background)",
    )
    stats_format: str = option(
        "jsonl",
        "statistics and errors as JSON Lines or as Parquet (columns per class: pixels_<class>, "
        "fraction_<class>)",
        choices=FORMATS,
    )
    progress_interval: float = option(
        DEFAULT_INTERVAL_S,
        "seconds between progress lines on the DirectRunner; 0 turns them off",
    )
    overwrite: bool = option(
        False, "delete the outputs of another run found in OUT instead of refusing them"
    )
    max_failed_fraction: float = option(
        0.0,
        "share of matched inputs that may fail (dead-lettered under OUT/errors) before the "
        "command exits 3; 0: any failure does",
    )


@dataclass
class SegmentJob:
    """A checked configuration of the segmentation job.

    Attributes:
      inputs: resolved inputs (pattern and root each).
      model: the model's metadata (``petseg.serving.export.ModelInfo``).
      output: normalised output folder OUT.
      extensions: extensions segmented, lower case, no dots.
      matched: distinct files the inputs matched when the job was checked.
      min_batch_size, max_batch_size: inference batching bounds.
      max_pixels: decode limit.
      max_file_bytes: read limit.
      overlays: whether overlays are written.
      threads: threads per worker process, in one pool shared by decoding,
        postprocessing, writing and statistics; ``None``: the runner's
        default (:func:`petseg.beam.pipeline.default_threads`).
      num_shards: JSON Lines shards of stats and errors.
      backend: the runtime that runs the model, ``auto`` resolved
        (:func:`petseg.serving.backends.choose_backend`).
      overwrite: replace another run's outputs in OUT instead of refusing them.
      progress_interval: seconds between progress lines on the DirectRunner (0: none).
      share_model, model_copies, accelerator: how workers hold the model
        (see :class:`~petseg.beam.inference.PetsegModelHandler`).
      coco_classes: the class indices ``OUT/coco.json`` annotates; empty: no COCO.
    """

    inputs: list[InputSpec]
    model: ModelInfo
    output: str
    extensions: tuple[str, ...]
    matched: int
    min_batch_size: int
    max_batch_size: int
    max_pixels: int
    max_file_bytes: int
    overlays: bool
    threads: int | None
    num_shards: int
    share_model: bool = False
    model_copies: int | None = None
    accelerator: str | None = None
    stats_format: str = "jsonl"
    backend: str = "tensorflow"
    overwrite: bool = False
    progress_interval: float = 0.0
    coco_classes: tuple[int, ...] = ()


def parse_extensions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"jpg, .PNG"`` -> ``("jpg", "png")``.

    Raises:
      SegmentConfigError: no extension given.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    extensions = tuple(
        dict.fromkeys(e.strip().lstrip(".").lower() for e in items if e.strip(".").strip())
    )
    if not extensions:
        raise SegmentConfigError(f"--extensions names no extension: {text!r}")
    return extensions


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise SegmentConfigError(f"{name} must be at least 1, got {value}")


def _real(location: str) -> str:
    return location if is_remote(location) else os.path.realpath(location)


def count_matches(inputs: Sequence[InputSpec], extensions: Sequence[str]) -> int:
    """Distinct files the inputs match, refusing an input that matches none.

    Raises:
      SegmentConfigError: an input matches no file with one of ``extensions``,
        or its filesystem cannot be listed.
    """
    paths: set[str] = set()
    for spec in inputs:
        try:
            found = {path for path, _, _ in list_images(spec, extensions)}
        except Exception as error:
            raise SegmentConfigError(f"cannot list input {spec.pattern}: {error}") from None
        if not found:
            raise SegmentConfigError(
                f"input {spec.pattern} matches no image files (extensions: {','.join(extensions)})"
            )
        paths |= found
    return len(paths)


def check_output(output: str, inputs: Sequence[InputSpec]) -> None:
    """Refuses an output that overlaps an input or cannot be written.

    Raises:
      SegmentConfigError: OUT is an input's root or inside it (its masks would
        become inputs of the next run), an input lies inside OUT, or a probe
        file cannot be written there.
    """
    real_output = _real(output)
    for spec in inputs:
        real_root = _real(spec.root)
        if inside(real_output, real_root):
            raise SegmentConfigError(
                f"--output {output} is inside the input folder {spec.root}; choose a folder "
                "outside every input"
            )
        if inside(real_root, real_output):
            raise SegmentConfigError(
                f"input folder {spec.root} is inside --output {output}; choose a separate output"
            )
    if not is_remote(output) and os.path.exists(output) and not os.path.isdir(output):
        raise SegmentConfigError(f"--output {output} exists and is not a folder")
    probe = join_path(output, WRITE_CHECK_FILE)
    try:
        with FileSystems.create(probe) as file:
            # Not empty: Beam's S3 writer cannot write a zero-length object.
            file.write(b"petseg")
        FileSystems.delete([probe])
    except Exception as error:
        raise SegmentConfigError(
            f"--output {output} is not writable: {type(error).__name__}: {error}"
        ) from None


def _checked_limits(config: SegmentConfig) -> int:
    """Checks the numeric flags; returns the smallest batch (``--max-batch-size`` if unset)."""
    max_batch_size = config.max_batch_size
    min_batch_size = max_batch_size if config.min_batch_size is None else config.min_batch_size
    _check_positive("--max-batch-size", max_batch_size)
    _check_positive("--min-batch-size", min_batch_size)
    if min_batch_size > max_batch_size:
        raise SegmentConfigError(
            f"--min-batch-size {min_batch_size} is larger than --max-batch-size {max_batch_size}"
        )
    _check_positive("--max-pixels", config.max_pixels)
    _check_positive("--max-file-bytes", config.max_file_bytes)
    if config.threads is not None:
        _check_positive("--threads", config.threads)
    if config.model_copies is not None:
        _check_positive("--model-copies", config.model_copies)
    if not 0.0 <= config.max_failed_fraction <= 1.0:
        raise SegmentConfigError(
            f"--max-failed-fraction must be between 0 and 1, got {config.max_failed_fraction}"
        )
    return min_batch_size


def coco_classes(config: SegmentConfig, class_names: Sequence[str]) -> tuple[int, ...]:
    """The class indices ``--coco`` annotates; empty without ``--coco``.

    Raises:
      SegmentConfigError: ``--coco-classes`` without ``--coco``, or naming no
        class or a class the model does not have.
    """
    if not config.coco:
        if config.coco_classes.strip():
            raise SegmentConfigError("--coco-classes needs --coco")
        return ()
    if not config.coco_classes.strip():
        return tuple(i for i, name in enumerate(class_names) if name != "background")
    names = [name.strip() for name in config.coco_classes.split(",") if name.strip()]
    unknown = [name for name in names if name not in class_names]
    if unknown or not names:
        raise SegmentConfigError(
            f"--coco-classes {config.coco_classes!r} names no class or a class the model does "
            f"not have ({', '.join(unknown)}); its classes: {', '.join(class_names)}"
        )
    return tuple(sorted({class_names.index(name) for name in names}))


def _workers_have_gpu(config: SegmentConfig) -> bool:
    """Whether the model will run on GPUs: the job asks for an accelerator, or this
    machine, where local runners run it, has one."""
    if config.accelerator:
        return True
    if config.backend != "auto":
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _checked_backend(config: SegmentConfig, model: ModelInfo) -> str:
    """The backend that will run ``model``, once its SavedModel's signature is checked.

    Reads the signature only (not the whole model: that takes seconds), so a
    model whose input size or class count disagrees with petseg.json is refused
    before any worker starts, rather than failing every bundle on every worker.
    """
    from petseg.serving.backends import choose_backend
    from petseg.serving.export import ExportError, check_export

    try:
        check_export(model.export_dir)
        return choose_backend(config.backend, model, gpu=_workers_have_gpu(config))
    except ExportError as error:
        raise SegmentConfigError(str(error)) from None


def prepare_job(config: SegmentConfig) -> SegmentJob:
    """Checks a configuration and resolves it into a :class:`SegmentJob`.

    Cheap checks come first, so a wrong flag is reported before any listing;
    the model is loaded last and checked against its ``petseg.json``.

    Raises:
      SegmentConfigError: the first problem found.
    """
    from petseg.serving.export import ExportError, read_model_info

    inputs, output = config.input, config.output
    max_batch_size = config.max_batch_size
    min_batch_size = _checked_limits(config)
    max_pixels, max_file_bytes = config.max_pixels, config.max_file_bytes
    extension_list = parse_extensions(config.extensions or DEFAULT_EXTENSIONS)
    if not inputs or any(not text.strip() for text in inputs):
        raise SegmentConfigError("--input must name a folder, a file or a pattern")
    if not output.strip():
        raise SegmentConfigError("--output must name a folder")

    model_location = normalise_location(config.model)
    try:
        model = read_model_info(model_location)
    except ExportError as error:
        raise SegmentConfigError(str(error)) from None

    for text in inputs:
        if not is_remote(text) and not re.search(r"[*?\[]", text) and not os.path.exists(text):
            raise SegmentConfigError(f"input {text} does not exist")
    specs = [resolve_input(text) for text in inputs]
    matched = count_matches(specs, extension_list)
    output_location = normalise_location(output)
    check_output(output_location, specs)
    annotated = coco_classes(config, model.class_names)
    backend = _checked_backend(config, model)
    return SegmentJob(
        inputs=specs,
        model=model,
        output=output_location,
        extensions=extension_list,
        matched=matched,
        min_batch_size=min_batch_size,
        max_batch_size=max_batch_size,
        max_pixels=max_pixels,
        max_file_bytes=max_file_bytes,
        overlays=config.overlays,
        threads=config.threads,
        num_shards=max(1, math.ceil(matched / RECORDS_PER_SHARD)),
        share_model=config.share_model,
        model_copies=config.model_copies,
        accelerator=config.accelerator or None,
        stats_format=config.stats_format,
        backend=backend,
        overwrite=config.overwrite,
        progress_interval=config.progress_interval,
        coco_classes=annotated,
    )
