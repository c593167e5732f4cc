"""Reading objects by id: shard, row group and row of each id; values in the order asked."""

import numpy as np
import pytest

from stages.errors import InputError
from stages.shards import ROW_GROUP_ROWS, ShardWriter, objects_table
from stages.shards.by_id import ShardReader, locate


def _write(tmp_path, n=150, per_shard=70):
    w = ShardWriter(tmp_path, "train", per_shard)
    for lo in range(0, n, 10):  # units of 10 rows, as the extract stage adds one image at a time
        ids = np.arange(lo, min(n, lo + 10)) * 3 + 7  # ids are not row numbers
        w.add(
            objects_table(
                {
                    "object_id": ids,
                    "image_id": ids // 10,
                    "split": ["train"] * len(ids),
                    **{c: np.zeros(len(ids), np.float32) for c in ("x1", "y1", "x2", "y2", "area", "score")},
                    "crop": [f"crop-{i}".encode() for i in ids],
                    "extractor": ["test"] * len(ids),
                }
            )
        )
    w.close()
    return np.arange(n) * 3 + 7


def test_shards_have_small_row_groups_and_reads_follow_the_asked_order(tmp_path):
    import pyarrow.parquet as pq

    ids = _write(tmp_path)
    meta = pq.ParquetFile(tmp_path / "train-00000.parquet").metadata
    assert meta.num_row_groups == -(-meta.num_rows // ROW_GROUP_ROWS) > 1
    assert meta.row_group(0).column(10).statistics is None  # no crop bytes copied into the footer
    wanted = np.random.default_rng(0).permutation(ids)[:60]
    loc = locate(tmp_path, "train", wanted)
    assert len(loc) == 60 and loc.shard.dtype == np.int32 and loc.row.dtype == np.int32
    reader = ShardReader(loc)
    items = np.array([5, 0, 59, 5, 31])
    assert reader.read(items) == [f"crop-{i}".encode() for i in wanted[items]]
    order = loc.storage_order()
    assert (np.diff(loc.global_rows(order)) > 0).all()
    import pickle

    clone = pickle.loads(pickle.dumps(reader))  # what a DataLoader worker gets: no open files
    assert clone._files == {} and clone.read(items) == reader.read(items)


def test_a_missing_id_is_a_user_error(tmp_path):
    _write(tmp_path, n=20)
    with pytest.raises(InputError, match="not in the 'train' shards"):
        locate(tmp_path, "train", np.array([7, 8]))
