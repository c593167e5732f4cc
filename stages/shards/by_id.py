"""Read objects of the Parquet shards by id: an index from object id to shard, row group and row.

:func:`locate` reads only the ``object_id`` column of a split's shards and returns
:class:`ShardLocations`: for each requested object its shard (int32) and its row in that shard
(int32), 8 bytes per object, plus each shard's row-group boundaries (a few bytes per row group).
:class:`ShardReader` reads any column of any set of those objects: the rows are grouped by
(shard, row group), each row group's column is read once, and the values come back in the order
asked. It keeps a few open files and the last row group read, nothing else, and pickles without
them (a DataLoader worker opens its own files).

Opening a shard parses its whole footer (~17 MB for 50,000 rows in 32-row groups), so the reader
suits reads in storage order; the train stage's random reads at scale go through its packed crops
(:func:`stages.train.data.pack_crops`), which this reader fills.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from stages.errors import InputError, MissingInputError
from stages.shards import shard_paths

OPEN_FILES = 8  # ParquetFile objects kept open per reader (each holds its footer)


@dataclass(frozen=True)
class ShardLocations:
    """Where each object of a selection lies: ``shard[i]``, ``row[i]`` (row in that shard).

    Row groups are numbered across all shards: ``group_start[g]`` is the first global row of row
    group g (global row = ``shard_base[shard] + row``), ``group_shard[g]`` its shard and
    ``group_first[s]`` the number of shard s's first row group."""

    paths: tuple[str, ...]
    shard: np.ndarray  # int32 [N]
    row: np.ndarray  # int32 [N]
    shard_base: np.ndarray  # int64 [shards]
    group_start: np.ndarray  # int64 [row groups]
    group_shard: np.ndarray  # int32 [row groups]
    group_first: np.ndarray  # int64 [shards]

    def __len__(self) -> int:
        return len(self.shard)

    def global_rows(self, items: np.ndarray) -> np.ndarray:
        return self.shard_base[self.shard[items]] + self.row[items]

    def row_groups(self, items: np.ndarray) -> np.ndarray:
        """Global row group of each item ``items`` (indices into the selection)."""
        return np.searchsorted(self.group_start, self.global_rows(items), side="right") - 1

    def storage_order(self) -> np.ndarray:
        """Selection indices sorted by (shard, row): reading them in this order reads each row group once."""
        return np.argsort(self.global_rows(np.arange(len(self))), kind="stable")


def locate(directory: Path, split: str, object_ids: np.ndarray) -> ShardLocations:
    """Shard and row of each of ``object_ids`` among the shards of ``split`` (InputError if one is missing)."""
    paths = shard_paths(directory, split)
    if not paths:
        raise MissingInputError(f"no object shards for split '{split}' in {directory}; run the extract stage")
    ids, shard, row, sizes, group_shard = [], [], [], [], []
    for i, p in enumerate(
        tqdm(paths, desc="locate training objects", unit="shard", leave=False, disable=len(paths) < 4)
    ):
        f = pq.ParquetFile(p)
        col = f.read(columns=["object_id"]).column(0).to_numpy()
        ids.append(col)
        shard.append(np.full(len(col), i, dtype=np.int32))
        row.append(np.arange(len(col), dtype=np.int32))
        sizes += [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)]
        group_shard += [i] * f.metadata.num_row_groups
    rows_per_shard = np.array([len(c) for c in ids], dtype=np.int64)
    shard_base = np.concatenate([[0], np.cumsum(rows_per_shard)[:-1]]).astype(np.int64)
    group_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)
    group_shard_arr = np.asarray(group_shard, dtype=np.int32)
    group_first = np.searchsorted(group_shard_arr, np.arange(len(paths)), side="left").astype(np.int64)
    all_ids, all_shard, all_row = np.concatenate(ids), np.concatenate(shard), np.concatenate(row)
    order = np.argsort(all_ids, kind="stable")
    wanted = np.asarray(object_ids, dtype=np.int64)
    pos = np.searchsorted(all_ids[order], wanted)
    pos = np.minimum(pos, len(order) - 1)
    found = all_ids[order][pos] == wanted if len(order) else np.zeros(len(wanted), bool)
    if not found.all():
        missing = wanted[~found][:5].tolist()
        raise InputError(
            f"{int((~found).sum())} objects are not in the '{split}' shards of {directory} (e.g. {missing})"
        )
    hit = order[pos]
    return ShardLocations(
        tuple(str(p) for p in paths),
        all_shard[hit],
        all_row[hit],
        shard_base,
        group_start,
        group_shard_arr,
        group_first,
    )


@dataclass
class ShardReader:
    """Values of one column for any objects of a :class:`ShardLocations`, in the order asked."""

    locations: ShardLocations
    column: str = "crop"
    _files: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _last: tuple | None = field(default=None, repr=False)  # ((shard, row group), pyarrow array)

    def __getstate__(self):
        return {"locations": self.locations, "column": self.column, "_files": OrderedDict(), "_last": None}

    def _file(self, shard: int) -> pq.ParquetFile:
        f = self._files.pop(shard, None)
        if f is None:
            f = pq.ParquetFile(self.locations.paths[shard])
            while len(self._files) >= OPEN_FILES:
                self._files.popitem(last=False)
        self._files[shard] = f
        return f

    def _row_group(self, shard: int, group: int) -> pa.Array:
        if self._last is None or self._last[0] != (shard, group):
            table = self._file(shard).read_row_group(group, columns=[self.column])
            self._last = ((shard, group), table.column(0).combine_chunks())
        return self._last[1]

    def read(self, items: np.ndarray) -> list:
        """``column`` of the selection's items ``items`` (Python values, e.g. bytes), in that order."""
        items = np.asarray(items, dtype=np.int64)
        loc = self.locations
        group = loc.row_groups(items)
        local = loc.global_rows(items) - loc.group_start[group]
        order = np.argsort(group, kind="stable")  # request positions grouped by row group
        keys, bounds = np.unique(group[order], return_index=True)
        bounds = np.append(bounds, len(order))
        values: list = [None] * len(items)
        for j, g in enumerate(keys.tolist()):  # one read per row group (I/O, not maths)
            pick = order[bounds[j] : bounds[j + 1]]
            shard = int(loc.group_shard[g])
            column = self._row_group(shard, g - int(loc.group_first[shard]))
            for p, v in zip(pick.tolist(), column.take(pa.array(local[pick])).to_pylist()):
                values[p] = v
        return values
