import numpy as np
import pyarrow.parquet as pq
import pytest

from stages.shards import OBJECT_SCHEMA, ShardWriter, objects_table, read_objects, shard_paths


def rows(start, n, split="train"):
    return objects_table(
        {
            "object_id": np.arange(start, start + n),
            "image_id": np.full(n, 7),
            "split": [split] * n,
            "x1": np.zeros(n), "y1": np.zeros(n), "x2": np.ones(n) * 4, "y2": np.ones(n) * 3,
            "area": np.full(n, 12.0),
            "score": np.linspace(0, 1, n),
            "crop": [b"\x89PNG" + bytes([i % 256]) for i in range(n)],
            "extractor": ["graph"] * n,
        }
    )


def test_writer_splits_into_shards_of_fixed_size(tmp_path):
    w = ShardWriter(tmp_path, "train", rows_per_shard=4)
    w.add(rows(0, 3))
    w.add(rows(3, 6))
    paths = w.close()
    assert [pq.read_metadata(p).num_rows for p in paths] == [4, 4, 1]
    assert paths == shard_paths(tmp_path, "train")
    df = read_objects(tmp_path, "train")
    assert df["object_id"].tolist() == list(range(9))
    assert pq.read_schema(paths[0]).equals(OBJECT_SCHEMA)
    assert not list(tmp_path.glob("*.tmp"))


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
