import numpy as np
import pyarrow.parquet as pq
import pytest

from stages.shards import OBJECT_SCHEMA, ShardWriter, objects_table, read_objects, shard_path, shard_paths


def rows(start, n, split="train", **extra):
    return objects_table(
        {
            **extra,
            "object_id": np.arange(start, start + n),
            "image_id": np.full(n, 7),
            "split": [split] * n,
            "x1": np.zeros(n),
            "y1": np.zeros(n),
            "x2": np.ones(n) * 4,
            "y2": np.ones(n) * 3,
            "area": np.full(n, 12.0),
            "score": np.linspace(0, 1, n),
            "crop": [b"\x89PNG" + bytes([i % 256]) for i in range(n)],
            "extractor": ["graph"] * n,
        }
    )


def test_writer_flushes_whole_units_once_full(tmp_path):
    w = ShardWriter(tmp_path, "train", rows_per_shard=4)
    assert w.add(rows(0, 3)) is None  # 3 rows buffered: below the shard size
    first = w.add(rows(3, 6))  # 9 rows: one shard, the unit of 6 is not split
    assert first == shard_path(tmp_path, "train", 0)
    assert w.add(rows(9, 4)) == shard_path(tmp_path, "train", 1)
    assert w.add(rows(13, 1)) is None
    paths = w.close()
    assert [pq.read_metadata(p).num_rows for p in paths] == [9, 4, 1]
    assert paths == shard_paths(tmp_path, "train")
    df = read_objects(tmp_path, "train")
    assert df["object_id"].tolist() == list(range(14))
    assert pq.read_schema(paths[0]).equals(OBJECT_SCHEMA)
    assert not list(tmp_path.glob("*.tmp"))


def test_optional_columns_default_to_nan_and_null(tmp_path):
    w = ShardWriter(tmp_path, "train", 100)
    w.add(rows(0, 2))
    table = rows(2, 2, stability=[0.5, 0.25], mask_rle=['{"size": [4, 4], "counts": "04"}', None])
    w.add(table)
    w.close()
    df = read_objects(tmp_path, "train")
    assert np.isnan(df["stability"][:2]).all() and df["stability"][2:].tolist() == [0.5, 0.25]
    assert df["mask_rle"].isna().tolist() == [True, True, False, True]
    assert df["mask_rle"][2] == '{"size": [4, 4], "counts": "04"}'


def test_empty_split_writes_one_empty_shard(tmp_path):
    paths = ShardWriter(tmp_path, "test", 10).close()
    assert len(paths) == 1 and len(read_objects(tmp_path, "test")) == 0


def test_partial_file_is_not_a_shard(tmp_path):
    (tmp_path / "train-00000.parquet.tmp").write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="extract stage"):
        read_objects(tmp_path, "train")
    assert shard_paths(tmp_path, "train") == []


def test_read_selected_columns(tmp_path):
    w = ShardWriter(tmp_path, "train", 100)
    w.add(rows(0, 5))
    w.close()
    df = read_objects(tmp_path, "train", columns=["object_id", "area"])
    assert list(df.columns) == ["object_id", "area"]
