"""The statistics and errors tables: JSON Lines or Parquet shards, and reading them back.

Both formats hold the same rows, sorted by input path within shards chosen
by a stable hash (:class:`~petseg.beam.shards.WriteTable`), so reruns and
resumed runs write byte-identical files. Parquet's columns are flat, one
pair per class, named from the model's classes::

    path, mask_path, width, height, pixels_<class>..., fraction_<class>...,
    mean_confidence, model_id

and errors ``path, stage, error_type, message``. BigQuery, Spark, DuckDB and
pandas read them as they are (see docs/segment.md).

The shards are encoded with ``pyarrow`` (which Beam itself depends on) rather
than Beam's ``WriteToParquet``, which neither sorts rows nor lets the job
name its shards, so neither reruns nor resumed runs would match byte for byte.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

FORMATS = ("jsonl", "parquet")
ERROR_COLUMNS = ("path", "stage", "error_type", "message")
# Rows encoded at once: JSON Lines a few hundred KiB at a time; a Parquet row group each.
JSON_LINES_CHUNK_ROWS = 1_000
PARQUET_CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class TableFormat:
    """How one table's shards are encoded.

    Attributes:
      suffix: the shard files' extension, without its dot.
      columns: for Parquet, each column's name and Arrow type name; empty for JSON Lines.
    """

    suffix: str
    columns: tuple[tuple[str, str], ...] = ()

    def encode(self, lines: Iterable[str]) -> bytes:
        """The shard's bytes for its sorted JSON lines."""
        return b"".join(self.chunks(lines))

    def chunks(self, lines: Iterable[str]) -> Iterator[bytes]:
        """The shard's bytes for its sorted JSON lines, a chunk at a time: a shard
        can hold millions of lines, so they are never held all at once (nor is a
        JSON Lines file; a Parquet file is, compressed, as its footer comes last)."""
        lines = iter(lines)
        if self.suffix == "jsonl":
            while chunk := list(itertools.islice(lines, JSON_LINES_CHUNK_ROWS)):
                yield "".join(f"{line}\n" for line in chunk).encode("utf-8")
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in self.columns])
        buffer = io.BytesIO()
        with pq.ParquetWriter(buffer, schema, compression="zstd") as writer:
            while chunk := list(itertools.islice(lines, PARQUET_CHUNK_ROWS)):
                rows = [flatten(json.loads(line)) for line in chunk]
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        yield buffer.getvalue()


def stats_format(name: str, class_names: Sequence[str]) -> TableFormat:
    """The statistics table's format: ``jsonl`` or ``parquet`` with one column pair per class."""
    if name == "jsonl":
        return TableFormat("jsonl")
    columns = [("path", "string"), ("mask_path", "string")]
    columns += [("width", "int32"), ("height", "int32")]
    columns += [(f"pixels_{name}", "int64") for name in class_names]
    columns += [(f"fraction_{name}", "float64") for name in class_names]
    columns += [("mean_confidence", "float64"), ("model_id", "string")]
    return TableFormat("parquet", tuple(columns))


def errors_format(name: str) -> TableFormat:
    """The errors table's format."""
    if name == "jsonl":
        return TableFormat("jsonl")
    return TableFormat("parquet", tuple((column, "string") for column in ERROR_COLUMNS))


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A statistics record's per-class mappings as ``pixels_<class>`` and ``fraction_<class>``."""
    row = {key: value for key, value in record.items() if not isinstance(value, dict)}
    for key in ("pixels", "fractions"):
        prefix = "fraction" if key == "fractions" else key
        for name, value in record.get(key, {}).items():
            row[f"{prefix}_{name}"] = value
    return row


def unflatten(row: dict[str, Any]) -> dict[str, Any]:
    """:func:`flatten` undone: a Parquet row as the JSON Lines record it came from."""
    record: dict[str, Any] = {}
    for key, value in row.items():
        for prefix, field in (("pixels_", "pixels"), ("fraction_", "fractions")):
            if key.startswith(prefix):
                record.setdefault(field, {})[key[len(prefix) :]] = value
                break
        else:
            record[key] = value
    return record


def iter_table(paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The records of JSON Lines or Parquet shard files (local or in a bucket), as JSON
    Lines records, one at a time: a Parquet shard a row group batch at a time."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    for path in sorted(paths):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            if path.endswith(".parquet"):
                import pyarrow.parquet as pq

                for batch in pq.ParquetFile(file).iter_batches(PARQUET_CHUNK_ROWS):
                    yield from (unflatten(row) for row in batch.to_pylist())
            else:
                for line in io.TextIOWrapper(file, encoding="utf-8"):
                    if line.strip():
                        yield json.loads(line)


def read_table(paths: Sequence[str]) -> list[dict[str, Any]]:
    """The records of JSON Lines or Parquet shard files, as JSON Lines records."""
    return list(iter_table(paths))
