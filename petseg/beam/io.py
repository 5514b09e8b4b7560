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
  the others is reported as an error at stage ``match``. A mask path that is
  also the folder of other masks (``a.jpg`` beside a folder ``a.png/``) is
  refused the same way. Nothing is silently overwritten and the outcome does
  not depend on processing order.

Local folders are listed by the job itself rather than by Beam's
``LocalFileSystem``, which silently drops links it cannot follow and lists
FIFOs (whose read blocks forever). Here every entry a pattern matches is
accounted for: a broken or looping link is listed and fails at ``read`` with
the operating system's reason; a link that leads outside its input folder,
a FIFO, a socket, a device, or a name that is not valid UTF-8 (which Beam's
coders cannot carry) is refused at ``match`` (:class:`UnsafeFileError`).
Linked folders are not descended into.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from petseg.beam.layout import MASKS_DIR, OVERLAYS_DIR, TEMP_MARKER
from petseg.beam.records import ERRORS_TAG, ErrorRecord, SourceImage
from petseg.imageio import IMAGE_EXTENSIONS
from petseg.storage import is_remote

DEFAULT_EXTENSIONS: tuple[str, ...] = IMAGE_EXTENSIONS
# OUT's layout (ARCHITECTURE.md, contracts 4-8).
COMMITTED_TAG = "committed"
STALE_TAG = "stale"

_GLOB_CHARS = re.compile(r"[*?\[]")

logger = logging.getLogger(__name__)


def error_output(path: str, stage: str, error: BaseException) -> beam.pvalue.TaggedOutput:
    """The error record of input ``path`` failing at ``stage``, on the ``errors`` output."""
    return beam.pvalue.TaggedOutput(ERRORS_TAG, ErrorRecord.from_exception(path, stage, error))


class UnsafePathError(ValueError):
    """A relative path that would place a mask outside OUT."""


class MaskCollisionError(ValueError):
    """An input whose mask path another input already claims."""


class UnsafeFileError(ValueError):
    """A listed entry the job refuses to read: a link out of its input folder, a FIFO, a socket."""


@dataclass(frozen=True)
class InputSpec:
    """One ``--input`` resolved to a pattern to match and the root masks mirror."""

    pattern: str
    root: str


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


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def inside(path: str, folder: str, separator: str = "/") -> bool:
    """Whether ``path`` is ``folder`` or lies below it (plain string rule, no resolving)."""
    path, folder = path.rstrip(separator), folder.rstrip(separator)
    return path == folder or path.startswith(folder + separator)


def inspect_local_file(path: str, root: str, check_link: bool = True) -> tuple[int, str]:
    """The size of a listed local entry and why it must not be read (empty when it may be).

    Args:
      path: the entry, as listed.
      root: its input folder.
      check_link: refuse a link whose target lies outside ``root``.

    Returns:
      ``(size in bytes, refusal)``. A broken or looping link gets ``(0, "")``:
      reading it fails with the operating system's own reason.
    """
    try:
        status = os.stat(path)
    except OSError:
        return 0, ""
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for is_kind, name in _KINDS if is_kind(status.st_mode)), "a device")
        return 0, f"not a regular file ({kind}); refusing to read it"
    if check_link and os.path.islink(path):
        target = os.path.realpath(path)
        if not inside(target, os.path.realpath(root), os.sep):
            return 0, (
                f"symbolic link leads outside the input folder {root} (to {target}); not followed"
            )
    return int(status.st_size), ""


def list_input(spec: InputSpec) -> Iterator[tuple[str, int, str]]:
    """Every entry ``spec.pattern`` matches, as ``(path, size in bytes, refusal)``.

    Remote patterns go through Beam's ``FileSystems``. Local ones follow the
    same pattern rules (``*`` within a name, ``**`` across folders) but are
    listed here so that nothing is dropped silently (see the module docstring).
    """
    if is_remote(spec.pattern):
        for metadata in FileSystems.match([spec.pattern])[0].metadata_list:
            yield metadata.path, int(metadata.size_in_bytes), ""
        return
    prefix = re.match(r"^[^[*?]*", spec.pattern).group(0)
    if prefix == spec.pattern:
        # A file named on its own: the user chose it, wherever a link leads.
        if os.path.lexists(spec.pattern) and not os.path.isdir(spec.pattern):
            yield (spec.pattern, *inspect_local_file(spec.pattern, spec.root, check_link=False))
        return
    folder = prefix if prefix.endswith("/") else os.path.dirname(prefix)
    matches = re.compile(FileSystem.translate_pattern(spec.pattern)).match

    def unlisted(error: OSError) -> None:
        logger.warning("cannot list %s: %s; files below it are not matched", error.filename, error)

    # followlinks=False: a linked folder is never descended into.
    for directory, _, names in os.walk(folder or ".", onerror=unlisted):
        for name in names:
            path = os.path.join(directory, name)
            if not matches(path):
                continue
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                # Beam's coders carry paths as UTF-8: such a name would fail the whole
                # job, so it is reported under a printable spelling of its bytes.
                printable = os.fsencode(path).decode("utf-8", "backslashreplace")
                yield printable, 0, "file name is not valid UTF-8; rename the file to segment it"
                continue
            yield (path, *inspect_local_file(path, spec.root))


def list_images(spec: InputSpec, extensions: Iterable[str]) -> Iterator[tuple[str, int, str]]:
    """:func:`list_input`, keeping entries with one of ``extensions``."""
    extensions = tuple(extensions)
    for path, size, refusal in list_input(spec):
        if has_extension(path, extensions):
            yield path, size, refusal


class MatchInputFn(beam.DoFn):
    """Lists one input; yields ``(path, (input index, relative path, size, refusal))``."""

    def __init__(self, extensions: Sequence[str]):
        self._extensions = tuple(extensions)

    def process(
        self, element: tuple[int, InputSpec]
    ) -> Iterator[tuple[str, tuple[int, str, int, str]]]:
        index, spec = element
        for path, size, refusal in list_images(spec, self._extensions):
            yield path, (index, relative_to_root(path, spec.root), size, refusal)


def _only_input(element: tuple[str, tuple[int, str, int, str]]) -> SourceImage:
    path, (_, relative, size, refusal) = element
    return SourceImage(path, relative, size, refused=refusal)


def _first_input(element: tuple[str, Iterable[tuple[int, str, int, str]]]) -> SourceImage:
    # A file matched by several inputs is one file; the earliest input names it.
    path, matches = element
    return _only_input((path, min(matches)))


class MatchImages(beam.PTransform):
    """Matches every input and yields each distinct image file once, as a :class:`SourceImage`.

    Several inputs may match one file, so their matches are grouped by path;
    one input lists each file once, and needs no grouping.

    Args:
      inputs: the resolved inputs (see :func:`resolve_input`).
      extensions: file extensions to keep, without dots.
    """

    def __init__(self, inputs: Sequence[InputSpec], extensions: Sequence[str] = DEFAULT_EXTENSIONS):
        super().__init__()
        self._inputs = list(inputs)
        self._extensions = tuple(extensions)

    def expand(self, pipeline):
        listed = (
            pipeline
            | "CreateInputs" >> beam.Create(list(enumerate(self._inputs)))
            | "ListFiles" >> beam.ParDo(MatchInputFn(self._extensions))
        )
        if len(self._inputs) == 1:
            return listed | "ToSources" >> beam.Map(_only_input)
        return (
            listed
            | "GroupByPath" >> beam.GroupByKey()
            | "DeduplicatePaths" >> beam.Map(_first_input)
        )


def _png_folders(mask_path: str) -> Iterator[str]:
    # Only a folder named like a mask can clash with a mask, so only those are claimed.
    parts = mask_path.split("/")
    for end in range(2, len(parts)):
        if parts[end - 1].endswith(".png"):
            yield "/".join(parts[:end])


class _KeyByMaskPathFn(beam.DoFn):
    """Keys sources by mask path; also claims each ``*.png`` folder a mask lies in.

    A claim is ``(folder, path of the input whose mask lies below it)``.
    """

    def process(self, source: SourceImage) -> Iterator[tuple[str, SourceImage | str]]:
        try:
            if source.refused:
                raise UnsafeFileError(source.refused)
            mask_path = mask_relative_path(source.relative)
        except (UnsafePathError, UnsafeFileError) as error:
            yield error_output(source.path, "match", error)
            return
        yield mask_path, source
        for folder in _png_folders(mask_path):
            yield folder, source.path


class _ResolveCollisionsFn(beam.DoFn):
    """One mask path's claims -> its winning source, errors, and what OUT already holds there.

    A winner whose mask OUT already holds goes to ``committed`` as
    ``(source, mask file)``, to be checked and reused; files under OUT that no
    source wins (stale masks, their overlays, a killed run's temporaries) go
    to ``stale``.
    """

    def process(
        self, element: tuple[str, Iterable[SourceImage | str | OutputFile]]
    ) -> Iterator[SourceImage]:
        mask_path, claims = element
        claims = list(claims)
        ordered = sorted(
            (claim for claim in claims if isinstance(claim, SourceImage)),
            key=lambda source: source.path,
        )
        present = [claim for claim in claims if isinstance(claim, OutputFile)]
        folder_of = sorted(claim for claim in claims if isinstance(claim, str))
        if not ordered or folder_of:
            for output_file in present:
                yield beam.pvalue.TaggedOutput(STALE_TAG, output_file)
        if not ordered:
            return
        if folder_of:
            # The folder holds other inputs' masks; the one file cannot take its name.
            for loser in ordered:
                error = MaskCollisionError(
                    f"its mask {mask_path} is the folder holding the mask of {folder_of[0]}"
                    + (f" and {len(folder_of) - 1} more" if len(folder_of) > 1 else "")
                    + "; rename one of them or segment it separately"
                )
                yield error_output(loser.path, "match", error)
            return
        winner = ordered[0]
        assigned = SourceImage(winner.path, winner.relative, winner.size_bytes, mask_path)
        committed = [claim.path for claim in present if claim.kind == "mask"]
        if committed:
            yield beam.pvalue.TaggedOutput(COMMITTED_TAG, (assigned, committed[0]))
        else:
            yield assigned
        for loser in ordered[1:]:
            error = MaskCollisionError(
                f"its mask {mask_path} is already the mask of {winner.path}; "
                "segment one of them separately (e.g. with --extensions)"
            )
            yield error_output(loser.path, "match", error)


class AssignMaskPaths(beam.PTransform):
    """Gives each :class:`SourceImage` its confined, collision-free mask path.

    Takes the sources, or ``(sources, outputs)`` where ``outputs`` holds
    ``(mask path, OutputFile)`` for what OUT already holds (see
    :func:`list_outputs`); they meet the sources in the one grouping by mask
    path that collisions need anyway, so resuming costs no extra shuffle.

    Returns ``(sources, errors, committed, stale)``: sources with
    ``mask_path`` set whose masks are still to be made; :class:`ErrorRecord`
    for unsafe paths, entries the listing refused, and collision losers;
    ``(source, mask file)`` for sources whose mask OUT already holds; and
    the :class:`OutputFile` entries under OUT that no source claims.
    """

    def expand(self, inputs):
        sources, outputs = inputs if isinstance(inputs, tuple) else (inputs, None)
        keyed = sources | "KeyByMaskPath" >> beam.ParDo(_KeyByMaskPathFn()).with_outputs(
            ERRORS_TAG, main="keyed"
        )
        claims = keyed.keyed
        if outputs is not None:
            claims = (claims, outputs) | "FlattenClaims" >> beam.Flatten()
        resolved = (
            claims
            | "GroupByMaskPath" >> beam.GroupByKey()
            | "ResolveCollisions"
            >> beam.ParDo(_ResolveCollisionsFn()).with_outputs(
                ERRORS_TAG, COMMITTED_TAG, STALE_TAG, main="sources"
            )
        )
        errors = (keyed[ERRORS_TAG], resolved[ERRORS_TAG]) | "FlattenPathErrors" >> beam.Flatten()
        return resolved.sources, errors, resolved[COMMITTED_TAG], resolved[STALE_TAG]


@dataclass(frozen=True)
class OutputFile:
    """A file a previous run left under OUT/masks or OUT/overlays.

    Attributes:
      path: its full path or URL.
      kind: ``"mask"``, ``"overlay"``, or ``"other"`` (a killed write's
        temporary, or anything else that has no place there).
    """

    path: str
    kind: str


def _list_files(folder: str) -> Iterator[str]:
    """Every file below ``folder`` (nothing when it does not exist)."""
    if is_remote(folder):
        for metadata in FileSystems.match([join_path(folder, "**")])[0].metadata_list:
            yield metadata.path
        return
    if not os.path.isdir(folder):
        return

    def unlisted(error: OSError) -> None:
        raise error

    for directory, _, names in os.walk(folder, onerror=unlisted):
        for name in names:
            yield os.path.join(directory, name)


def list_outputs(output: str) -> Iterator[tuple[str, OutputFile]]:
    """What OUT already holds under ``masks/`` and ``overlays/``, keyed by mask path.

    A mask is keyed by its own path below OUT, an overlay by its mask's, and
    anything else by its own path (no source can claim it, so it is pruned).

    Raises:
      OSError: (or a filesystem's own error) OUT cannot be listed.
    """
    prefix = output.rstrip("/") + "/"
    for folder, kind, suffix in ((MASKS_DIR, "mask", ".png"), (OVERLAYS_DIR, "overlay", ".jpg")):
        for path in _list_files(join_path(output, folder)):
            relative = path[len(prefix) :] if path.startswith(prefix) else path
            name = posixpath.basename(relative)
            if TEMP_MARKER in name or not name.endswith(suffix):
                yield relative, OutputFile(path, "other")
            elif kind == "mask":
                yield relative, OutputFile(path, kind)
            else:
                mask_path = MASKS_DIR + relative[len(OVERLAYS_DIR) : -len(suffix)] + ".png"
                yield mask_path, OutputFile(path, kind)
