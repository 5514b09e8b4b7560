"""Inputs and output paths: matching images, mask paths, confinement to OUT.

Matching goes through Beam's ``FileSystems``, so local folders, ``gs://`` and
``s3://`` all work. Each input keeps its root (the part of the pattern before
any wildcard), and a mask mirrors the image's path below that root.

Two rules keep every input accounted for and every write inside OUT:

- **Confinement.** A relative path is split on ``/`` and ``\\``; empty and
  ``.`` parts are dropped and a ``..`` part refuses the file (an object store
  happily holds an object named ``a/../../x.jpg``). The joined result is
  checked once more to lie under ``OUT/masks/``.
- **Collisions.** Inputs whose masks would share a path (``a.jpg`` and
  ``a.png`` in one folder, or the same relative path under two inputs) are
  grouped; the lexicographically smallest input path keeps the mask, each of
  the others is reported as an error at stage ``match``. Nothing is silently
  overwritten and the outcome does not depend on processing order.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from petseg.beam.records import ErrorRecord, SourceImage

DEFAULT_EXTENSIONS: tuple[str, ...] = (
    "jpg",
    "jpeg",
    "png",
    "gif",
    "bmp",
    "webp",
    "tif",
    "tiff",
)
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
ERRORS_TAG = "errors"

_GLOB_CHARS = re.compile(r"[*?\[]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class UnsafePathError(ValueError):
    """A relative path that would place a mask outside OUT."""


class MaskCollisionError(ValueError):
    """An input whose mask path another input already claims."""


@dataclass(frozen=True)
class InputSpec:
    """One ``--input`` resolved to a pattern to match and the root masks mirror."""

    pattern: str
    root: str


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL (``gs://``, ``s3://``...) rather than a local path."""
    return bool(_SCHEME.match(path))


def normalise_location(path: str) -> str:
    """An absolute local path, or a URL without a trailing slash."""
    if is_remote(path):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join_path(base: str, *parts: str) -> str:
    """Joins with ``/`` on every filesystem (``FileSystems.join`` needs the scheme installed)."""
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def resolve_input(text: str) -> InputSpec:
    """Turns one ``--input`` into what to match (driver side: it may touch the filesystem).

    A pattern with wildcards is matched as given, its root being the folder
    before the first wildcard. A folder means every file below it
    (``DIR/**``). A single file is matched alone, its root being its folder.

    Args:
      text: a file, a folder or a glob pattern, local or a URL.

    Returns:
      The resolved :class:`InputSpec`.
    """
    remote = is_remote(text)
    wildcard = _GLOB_CHARS.search(text)
    if wildcard:
        head = text[: wildcard.start()]
        root = head.rstrip("/") if head.endswith("/") else posixpath.dirname(head)
        pattern = (
            text
            if remote
            else os.path.join(normalise_location(root), text[len(root) :].lstrip("/"))
        )
        return InputSpec(pattern, normalise_location(root))
    location = normalise_location(text)
    if remote:
        is_folder = text.endswith("/") or not FileSystems.exists(location)
    else:
        is_folder = os.path.isdir(location)
    if is_folder:
        return InputSpec(join_path(location, "**"), location)
    return InputSpec(location, posixpath.dirname(location))


def has_extension(path: str, extensions: Iterable[str]) -> bool:
    """Whether ``path``'s extension is one of ``extensions`` (case-insensitive, no dot)."""
    name = posixpath.basename(path)
    _, dot, extension = name.rpartition(".")
    return bool(dot) and extension.lower() in {e.lower().lstrip(".") for e in extensions}


def relative_to_root(path: str, root: str) -> str:
    """``path`` below ``root``; a path outside it keeps only its file name."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)


def mask_relative_path(relative: str) -> str:
    """The mask's path below OUT for an image's path below its input root.

    Args:
      relative: the image's relative path, as listed (may be hostile).

    Returns:
      ``masks/<relative path with its extension replaced by .png>``.

    Raises:
      UnsafePathError: the path climbs out (``..``) or names no file.
    """
    parts = [part for part in re.split(r"[/\\]", relative) if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"relative path {relative!r} contains '..'; refusing to follow it")
    if not parts:
        raise UnsafePathError(f"relative path {relative!r} names no file")
    stem, dot, _ = parts[-1].rpartition(".")
    parts[-1] = f"{stem if dot else parts[-1]}.png"
    joined = posixpath.join(MASKS_DIR, *parts)
    # Belt and braces: whatever the rules above missed, normalisation must not leave masks/.
    if not posixpath.normpath(joined).startswith(MASKS_DIR + "/"):
        raise UnsafePathError(f"relative path {relative!r} maps outside {MASKS_DIR}/")
    return joined


def overlay_relative_path(mask_path: str) -> str:
    """The overlay JPEG's path below OUT for a mask's path below OUT."""
    return OVERLAYS_DIR + mask_path[len(MASKS_DIR) :].removesuffix(".png") + ".jpg"


class MatchInputFn(beam.DoFn):
    """Lists one input's pattern; yields ``(path, (input index, relative path, size))``."""

    def __init__(self, extensions: Sequence[str]):
        self._extensions = tuple(extensions)

    def process(self, element: tuple[int, InputSpec]) -> Iterator[tuple[str, tuple[int, str, int]]]:
        index, spec = element
        for metadata in FileSystems.match([spec.pattern])[0].metadata_list:
            if has_extension(metadata.path, self._extensions):
                relative = relative_to_root(metadata.path, spec.root)
                yield metadata.path, (index, relative, int(metadata.size_in_bytes))


def _first_input(element: tuple[str, Iterable[tuple[int, str, int]]]) -> SourceImage:
    # A file matched by several inputs is one file; the earliest input names it.
    path, matches = element
    _, relative, size = min(matches)
    return SourceImage(path, relative, size)


class MatchImages(beam.PTransform):
    """Matches every input and yields each distinct image file once, as a :class:`SourceImage`.

    Args:
      inputs: the resolved inputs (see :func:`resolve_input`).
      extensions: file extensions to keep, without dots.
    """

    def __init__(self, inputs: Sequence[InputSpec], extensions: Sequence[str] = DEFAULT_EXTENSIONS):
        super().__init__()
        self._inputs = list(inputs)
        self._extensions = tuple(extensions)

    def expand(self, pipeline):
        return (
            pipeline
            | "CreateInputs" >> beam.Create(list(enumerate(self._inputs)))
            | "ListFiles" >> beam.ParDo(MatchInputFn(self._extensions))
            | "GroupByPath" >> beam.GroupByKey()
            | "DeduplicatePaths" >> beam.Map(_first_input)
        )


class _KeyByMaskPathFn(beam.DoFn):
    def process(self, source: SourceImage) -> Iterator[tuple[str, SourceImage]]:
        try:
            yield mask_relative_path(source.relative), source
        except UnsafePathError as error:
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, ErrorRecord.from_exception(source.path, "match", error)
            )


class _ResolveCollisionsFn(beam.DoFn):
    def process(self, element: tuple[str, Iterable[SourceImage]]) -> Iterator[SourceImage]:
        mask_path, sources = element
        ordered = sorted(sources, key=lambda source: source.path)
        winner = ordered[0]
        yield SourceImage(winner.path, winner.relative, winner.size_bytes, mask_path)
        for loser in ordered[1:]:
            error = MaskCollisionError(
                f"its mask {mask_path} is already the mask of {winner.path}; "
                "segment one of them separately (e.g. with --extensions)"
            )
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, ErrorRecord.from_exception(loser.path, "match", error)
            )


class AssignMaskPaths(beam.PTransform):
    """Gives each :class:`SourceImage` its confined, collision-free mask path.

    Returns a ``DoOutputsTuple``: the main output holds sources with
    ``mask_path`` set; ``errors`` holds :class:`ErrorRecord` for unsafe paths
    and collision losers.
    """

    def expand(self, sources):
        keyed = sources | "KeyByMaskPath" >> beam.ParDo(_KeyByMaskPathFn()).with_outputs(
            ERRORS_TAG, main="keyed"
        )
        resolved = (
            keyed.keyed
            | "GroupByMaskPath" >> beam.GroupByKey()
            | "ResolveCollisions"
            >> beam.ParDo(_ResolveCollisionsFn()).with_outputs(ERRORS_TAG, main="sources")
        )
        errors = (keyed[ERRORS_TAG], resolved[ERRORS_TAG]) | "FlattenPathErrors" >> beam.Flatten()
        return resolved.sources, errors
