"""Parquet object shards: one row per extracted object, a few hundred files at most.

A shard is written to ``<name>.parquet.tmp`` and renamed when complete, so a crash never
leaves a partial file that looks complete.  ``read_objects`` reads any subset of columns
of all shards of a split, in shard order.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

OBJECT_SCHEMA = pa.schema(
    [
        ("object_id", pa.int64()),
        ("image_id", pa.int64()),
        ("split", pa.string()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
        ("area", pa.float32()),
        ("score", pa.float32()),
        ("crop", pa.binary()),
        ("extractor", pa.string()),
    ]
)
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


def shard_path(directory: Path, split: str, index: int) -> Path:
    return Path(directory) / f"{split}-{index:05d}.parquet"


def shard_paths(directory: Path, split: str) -> list[Path]:
    """Completed shards of a split, in order (temporary files are ignored)."""
    return sorted(Path(directory).glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].parquet"))


class ShardWriter:
    """Buffers object rows and writes a shard each ``rows_per_shard`` rows, atomically."""

    def __init__(self, directory: Path, split: str, rows_per_shard: int, start_index: int = 0):
        self.directory = Path(directory)
        self.split = split
        self.rows_per_shard = rows_per_shard
        self.index = start_index
        self._parts: list[pa.Table] = []
        self._buffered = 0
        self.written: list[Path] = []
        self.directory.mkdir(parents=True, exist_ok=True)

    def add(self, table: pa.Table) -> None:
        """Add rows (a table with OBJECT_SCHEMA); full shards are flushed as they fill."""
        self._parts.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self.rows_per_shard:
            merged = pa.concat_tables(self._parts)
            self._write(merged.slice(0, self.rows_per_shard))
            rest = merged.slice(self.rows_per_shard)
            self._parts, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> list[Path]:
        """Write what is buffered (possibly an empty shard when nothing was ever written)."""
        if self._buffered or not self.written:
            parts = self._parts or [OBJECT_SCHEMA.empty_table()]
            self._write(pa.concat_tables(parts))
        self._parts, self._buffered = [], 0
        return self.written

    def _write(self, table: pa.Table) -> None:
        final = shard_path(self.directory, self.split, self.index)
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(table.cast(OBJECT_SCHEMA), tmp, compression="zstd")
        os.replace(tmp, final)
        self.written.append(final)
        self.index += 1


def objects_table(columns: dict) -> pa.Table:
    """Build a table with OBJECT_SCHEMA from column arrays/lists."""
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in OBJECT_SCHEMA})


def read_objects(directory: Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """All objects of a split as a DataFrame (``columns`` limits what is read)."""
    paths = shard_paths(directory, split)
    if not paths:
        raise FileNotFoundError(f"no object shards for split '{split}' in {directory}; run the extract stage")
    tables = [pq.read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables).to_pandas()
