"""Parquet object shards: one row per extracted object, a few hundred files at most.

A shard is written to ``<name>.parquet.tmp`` and renamed when complete, so a crash never
leaves a partial file that looks complete.  A shard holds whole units (one ``add`` call, e.g.
the objects of one image), so the images of a completed shard are complete: the extract stage
resumes after them.  ``read_objects`` reads any subset of columns of all shards of a split, in
shard order; :mod:`stages.shards.by_id` reads single objects by id (shard, row group, row).

Shards are written in row groups of ``ROW_GROUP_ROWS`` rows, so reading one object by id
decodes one small row group of the ``crop`` column, not the whole shard (shards written before
this layout hold one row group and are still read, slowly).

Columns: ``score`` is the extractor's confidence (SAM: predicted IoU), ``stability`` SAM's
stability score (NaN for extractors without one), ``mask_rle`` the object's mask as COCO
compressed RLE JSON ``{"size": [h, w], "counts": "..."}`` (null when masks are not kept).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stages.atomic import atomic_path
from stages.errors import MissingInputError

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
        ("stability", pa.float32()),
        ("crop", pa.binary()),
        ("mask_rle", pa.string()),
        ("extractor", pa.string()),
    ]
)
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
# Rows per Parquet row group: a read by id decodes one row group of the crop column (32 crops:
# ~0.35 MB at 227-px JPEG). Statistics of the large binary columns are not written (they would
# copy crop bytes into the footer of every row group).
ROW_GROUP_ROWS = 32
_STATISTICS = [f.name for f in OBJECT_SCHEMA if f.name not in ("crop", "mask_rle")]


def shard_path(directory: Path, split: str, index: int) -> Path:
    return Path(directory) / f"{split}-{index:05d}.parquet"


def shard_paths(directory: Path, split: str) -> list[Path]:
    """Completed shards of a split, in order (temporary files are ignored)."""
    return sorted(Path(directory).glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].parquet"))


class ShardWriter:
    """Buffers object rows and writes a shard, atomically, once ``rows_per_shard`` rows are buffered.

    Units passed to :meth:`add` are never split between shards, so a shard may hold a few rows more
    than ``rows_per_shard``.
    """

    def __init__(self, directory: Path, split: str, rows_per_shard: int, start_index: int = 0):
        self.directory = Path(directory)
        self.split = split
        self.rows_per_shard = rows_per_shard
        self.index = start_index
        self._parts: list[pa.Table] = []
        self._buffered = 0
        self.written: list[Path] = []
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def buffered_rows(self) -> int:
        return self._buffered

    def add(self, table: pa.Table) -> Path | None:
        """Add rows (a table with OBJECT_SCHEMA); returns the shard written when the buffer filled up."""
        if table.num_rows:
            self._parts.append(table)
            self._buffered += table.num_rows
        if self._buffered >= self.rows_per_shard:
            return self.flush()
        return None

    def flush(self) -> Path | None:
        """Write the buffered rows as one shard (nothing when the buffer is empty)."""
        if not self._buffered:
            return None
        path = self._write(pa.concat_tables(self._parts))
        self._parts, self._buffered = [], 0
        return path

    def close(self) -> list[Path]:
        """Write what is buffered (an empty shard when the split has no shard at all)."""
        self.flush()
        if not self.written and not shard_paths(self.directory, self.split):
            self._write(OBJECT_SCHEMA.empty_table())
        return self.written

    def _write(self, table: pa.Table) -> Path:
        final = shard_path(self.directory, self.split, self.index)
        with atomic_path(final) as tmp:
            pq.write_table(
                table.cast(OBJECT_SCHEMA),
                tmp,
                compression="zstd",
                row_group_size=ROW_GROUP_ROWS,
                write_statistics=_STATISTICS,
            )
        self.written.append(final)
        self.index += 1
        return final


_OPTIONAL = {"stability": float("nan"), "mask_rle": None}


def objects_table(columns: dict) -> pa.Table:
    """Build a table with OBJECT_SCHEMA from column arrays/lists (``stability`` defaults to NaN,
    ``mask_rle`` to null)."""
    n = len(columns["object_id"])
    arrays = {}
    for f in OBJECT_SCHEMA:
        values = columns.get(f.name)
        if values is None and f.name in _OPTIONAL:
            values = [_OPTIONAL[f.name]] * n
        arrays[f.name] = pa.array(values, type=f.type)
    return pa.table(arrays)


def read_objects(directory: Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """All objects of a split as a DataFrame (``columns`` limits what is read)."""
    paths = shard_paths(directory, split)
    if not paths:
        raise MissingInputError(f"no object shards for split '{split}' in {directory}; run the extract stage")
    tables = [pq.read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables).to_pandas()
