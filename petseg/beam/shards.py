"""Sorted table shards, written with bounded memory on any runner.

A table's rows are ``(sort key, line)`` pairs. They are not grouped by
shard themselves: each bundle sorts what it holds into *spills*, files in the
table's ``.spills/`` folder written whenever it holds :data:`SPILL_CHARS`
characters and when it finishes, and only the spills' names are grouped by
shard. Each shard is then a streaming merge of its spills (``heapq.merge``,
:data:`MERGE_FAN_IN` at a time), encoded and written atomically. Once the
pipeline is done, the driver deletes the spills folder (:func:`remove_spills`):
a step for it would cost every run its start-up, and only the end of the
whole pipeline is sure that no shard is written again.

So no step, and no runner, holds a whole table: before, the DirectRunner
kept every statistics line in its memory until the end of the run, then the
shard's writer sorted and joined them all at once. Spills of a bundle that
failed are never named downstream; they go with the folder, as do those of
a killed run. Spills are hidden temporaries
(:data:`~petseg.beam.layout.TEMP_MARKER`), like any write cut short.
"""

from __future__ import annotations

import heapq
import io
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from petseg.beam.io import is_remote, join_path
from petseg.beam.tables import TableFormat
from petseg.beam.write import delete_if_present, temporary_suffix, write_atomically, write_fresh

JSON_LINES = TableFormat("jsonl")
SPILLS_DIR = ".spills"
# A bundle writes its sorted spills once it holds this many characters of rows.
SPILL_CHARS = 2**20
# Spills merged at once; more are merged in rounds, through spills of spills.
MERGE_FAN_IN = 64


def shard_name(
    directory: str, prefix: str, index: int, num_shards: int, suffix: str = "jsonl"
) -> str:
    """``directory/prefix-00003-of-00016.jsonl`` (or ``.parquet``)."""
    return join_path(directory, f"{prefix}-{index:05d}-of-{num_shards:05d}.{suffix}")


def shard_of(sort_key: str, num_shards: int) -> int:
    """A shard chosen by a stable hash (Python's ``hash`` differs between processes)."""
    return zlib.crc32(sort_key.encode("utf-8")) % num_shards


def _spill_path(spills_dir: str, prefix: str, shard: int) -> str:
    return join_path(spills_dir, f".{prefix}-{shard:05d}{temporary_suffix()}")


def write_spill(path: str, rows: Iterable[tuple[str, str]]) -> None:
    """Writes sorted rows as a run: per row, the key as JSON, a tab, the line.

    A line is JSON already, so it holds no raw tab or newline; the key is
    escaped, so any path survives.
    """
    write_fresh(path, lambda: (f"{json.dumps(key)}\t{line}\n".encode() for key, line in rows))


def read_spill(path: str) -> Iterator[tuple[str, str]]:
    """A spill's rows, in order, read as they are needed."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        for text in io.TextIOWrapper(raw, encoding="utf-8", newline="\n"):
            key, _, line = text.rstrip("\n").partition("\t")
            yield json.loads(key), line


def merge_spills(paths: list[str], spills_dir: str, prefix: str, shard: int) -> Iterator[str]:
    """The lines of ``paths``' spills in (key, line) order, merging at most
    :data:`MERGE_FAN_IN` spills at once (more go through intermediate spills)."""
    paths = sorted(paths)
    while len(paths) > MERGE_FAN_IN:
        merged = []
        for start in range(0, len(paths), MERGE_FAN_IN):
            path = _spill_path(spills_dir, prefix, shard)
            write_spill(path, heapq.merge(*map(read_spill, paths[start : start + MERGE_FAN_IN])))
            merged.append(path)
        paths = merged
    return (line for _, line in heapq.merge(*map(read_spill, paths)))


def _as_row(row: tuple[str, str]) -> tuple[str, str]:
    return row


class _SortIntoSpillsFn(beam.DoFn):
    """Rows (as ``row`` makes them) -> ``(shard, run path)``, a run per shard held."""

    def __init__(
        self,
        spills_dir: str,
        prefix: str,
        num_shards: int,
        spill_chars: int,
        row: Callable[[Any], tuple[str, str]],
    ):
        self._spills_dir = spills_dir
        self._prefix = prefix
        self._num_shards = num_shards
        self._spill_chars = spill_chars
        self._row = row

    def start_bundle(self):
        self._held: dict[int, list[tuple[str, str]]] = {}
        self._chars = 0

    def process(self, element: Any) -> Iterator[tuple[int, str]]:
        row = self._row(element)
        key, line = row
        self._held.setdefault(shard_of(key, self._num_shards), []).append(row)
        self._chars += len(key) + len(line)
        if self._chars >= self._spill_chars:
            yield from self._write_spills()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for output in self._write_spills():
            yield GlobalWindows.windowed_value(output)

    def _write_spills(self) -> list[tuple[int, str]]:
        held, self._held, self._chars = self._held, {}, 0
        written = []
        for shard, rows in sorted(held.items()):
            rows.sort()
            path = _spill_path(self._spills_dir, self._prefix, shard)
            write_spill(path, rows)
            written.append((shard, path))
        return written


class _WriteShardFn(beam.DoFn):
    """``(shard, its spill paths)`` -> the shard written from their merge; yields its path."""

    def __init__(self, directory: str, prefix: str, num_shards: int, table_format: TableFormat):
        self._directory = directory
        self._prefix = prefix
        self._num_shards = num_shards
        self._format = table_format

    def process(self, element: tuple[int, Iterable[str | None]]) -> Iterator[str]:
        index, spills = element
        spills = [spill for spill in spills if spill is not None]
        path = shard_name(
            self._directory, self._prefix, index, self._num_shards, self._format.suffix
        )
        if not spills and not self._format.encode([]) and is_remote(path):
            # Beam's S3 writer cannot write a zero-length object, so an object
            # store holds no empty shard; an older one of that name must go.
            delete_if_present(path)
            return
        spills_dir = join_path(self._directory, SPILLS_DIR)
        write_atomically(
            path, lambda: self._format.chunks(merge_spills(spills, spills_dir, self._prefix, index))
        )
        yield path


def remove_spills(directory: str) -> None:
    """Deletes the spills folder of the table in ``directory``, once its shards are written.

    Raises:
      EnvironmentFault: it cannot be deleted.
    """
    delete_if_present(join_path(directory, SPILLS_DIR), folder=True)


class WriteTable(beam.PTransform):
    """Writes rows, ``(sort key, JSON line)`` pairs, to a fixed number of sorted shards.

    Takes one collection, or several (a tuple): each is sorted into spills
    where it is made, so none is held whole to be flattened first. The spills
    stay until :func:`remove_spills`.

    Every shard is written, empty or not, so a folder always holds exactly
    ``num_shards`` files and a rerun rewrites the same names with the same bytes.

    Args:
      directory: the folder of the shards.
      prefix: shard file name prefix.
      num_shards: how many shards.
      table_format: JSON Lines (the default) or Parquet (:mod:`petseg.beam.tables`).
      spill_chars: characters of rows a bundle holds before it writes them as spills.
      row: makes an element's row (default: the elements are rows).

    Returns the PCollection of written shard paths.
    """

    def __init__(
        self,
        directory: str,
        prefix: str,
        num_shards: int = 1,
        table_format: TableFormat = JSON_LINES,
        spill_chars: int = SPILL_CHARS,
        row: Callable[[Any], tuple[str, str]] = _as_row,
    ):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, got {num_shards}")
        self._directory = directory
        self._prefix = prefix
        self._num_shards = num_shards
        self._format = table_format
        self._spill_chars = spill_chars
        self._row = row

    def expand(self, rows):
        parts = tuple(rows) if isinstance(rows, (tuple, list)) else (rows,)
        spills_dir = join_path(self._directory, SPILLS_DIR)
        spills = tuple(
            part
            | f"SortIntoSpills{index or ''}"
            >> beam.ParDo(
                _SortIntoSpillsFn(
                    spills_dir, self._prefix, self._num_shards, self._spill_chars, self._row
                )
            )
            for index, part in enumerate(parts)
        )
        # One empty marker per shard, so shards without rows are still written.
        markers = parts[0].pipeline | "CreateShards" >> beam.Create(
            [(index, None) for index in range(self._num_shards)]
        )
        return (
            (*spills, markers)
            | "FlattenShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(
                _WriteShardFn(self._directory, self._prefix, self._num_shards, self._format)
            )
        )
