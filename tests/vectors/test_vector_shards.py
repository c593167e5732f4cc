"""Embedding shards: written chunk by chunk, read back in order, sampled across shards."""

import numpy as np
import pytest

from stages.vectors.shards import VectorShardWriter, iter_vector_chunks, sample_rows, shard_rows, vector_shards


def test_roundtrip_and_rerun_replaces_shards(tmp_path):
    x = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    w = VectorShardWriter(tmp_path, "gallery")
    for s in (0, 20, 40):
        w.add(x[s : s + 20])
    paths = vector_shards(tmp_path)
    assert [p.name for p in paths] == ["gallery-00000.npy", "gallery-00001.npy", "gallery-00002.npy"]
    assert shard_rows(paths).tolist() == [20, 20, 10]
    np.testing.assert_array_equal(np.concatenate(list(iter_vector_chunks(paths))), x)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError):
        w.add(np.zeros((2, 4), np.float32))
    VectorShardWriter(tmp_path, "gallery").add(x[:5])  # a rerun starts over
    assert shard_rows(vector_shards(tmp_path)).tolist() == [5]


def test_sample_rows(tmp_path):
    x = np.arange(100, dtype=np.float32)[:, None].repeat(2, axis=1)
    w = VectorShardWriter(tmp_path)
    for s in range(0, 100, 30):
        w.add(x[s : s + 30])
    paths = vector_shards(tmp_path)
    s = sample_rows(paths, 40, seed=0)
    assert s.shape == (40, 2) and len(np.unique(s[:, 0])) == 40
    assert (s[:, 0] == s[:, 1]).all() and np.all(np.diff(s[:, 0]) > 0)  # real rows, in row order
    assert s[:, 0].max() >= 30  # drawn across shards
    np.testing.assert_array_equal(sample_rows(paths, 40, seed=0), s)
    assert sample_rows(paths, 1000).shape == (100, 2)
