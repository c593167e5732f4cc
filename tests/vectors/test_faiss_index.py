"""Index types: dispatch by gallery size, shard-by-shard building, recall of each type against exact search."""

import faiss
import numpy as np
import pytest

from stages.config import IndexParams
from stages.vectors.faiss_index import (
    auto_nlist,
    build_from_chunks,
    build_from_shards,
    gpu_count,
    load_for_search,
    pq_subquantizers,
    resolve_type,
)
from stages.vectors.shards import VectorShardWriter, vector_shards


def _clustered(rng, n, d=32, centres=50, noise=0.3):
    c = rng.normal(size=(centres, d)).astype(np.float32)
    return (c[rng.integers(0, centres, n)] + rng.normal(0, noise, (n, d))).astype(np.float32)


def test_resolve_type_by_gallery_size():
    assert resolve_type("auto", 10, flat_max=1000) == "flat"
    assert resolve_type("auto", 1000, flat_max=1000) == "flat"
    assert resolve_type("auto", 1001, flat_max=1000) == "ivfpq"
    for kind in ("flat", "ivfpq", "hnsw"):
        assert resolve_type(kind, 10**9, 1) == kind
    with pytest.raises(ValueError, match="index.type"):
        resolve_type("lsh", 10, 1)


def test_auto_nlist_and_subquantizers():
    assert auto_nlist(1_000_000) == 4096  # 4 * sqrt(1e6) = 4000 -> 4096
    assert auto_nlist(10_000_000) == 16384  # 12649 -> 16384
    assert auto_nlist(100_000) == 1024  # 1265 -> 1024
    assert auto_nlist(2000) == 51  # capped at N / 39 training points per list
    assert auto_nlist(10**12) == 65536
    assert pq_subquantizers(64, 512) == 64 and pq_subquantizers(64, 1280) == 64
    assert pq_subquantizers(64, 100) == 50 and pq_subquantizers(8, 7) == 7


def test_no_gpu_here_and_disabled():
    assert gpu_count(False) == 0
    assert gpu_count(True) == (faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0)


@pytest.mark.parametrize(
    "kind, extra, min_recall",
    [
        ("flat", {}, 1.0),
        ("ivfpq", {"ivfpq": {"nlist": 32, "m": 8, "nbits": 6, "nprobe": 8, "train_size": 3000}}, 0.9),
        ("hnsw", {"hnsw": {"M": 16, "ef_search": 64}}, 0.95),
    ],
)
def test_each_type_built_from_shards_finds_the_exact_neighbours(tmp_path, kind, extra, min_recall):
    rng = np.random.default_rng(0)
    gallery = _clustered(rng, 4000)
    writer = VectorShardWriter(tmp_path, "gallery")
    for s in range(0, 4000, 700):  # uneven last shard
        writer.add(gallery[s : s + 700])
    assert writer.rows == 4000 and len(vector_shards(tmp_path)) == 6
    params = IndexParams.model_validate({"type": kind, **extra})
    index, built = build_from_shards(vector_shards(tmp_path), params)
    assert built == kind and index.ntotal == 4000
    faiss.write_index(index, str(tmp_path / "g.faiss"))
    loaded = load_for_search(tmp_path / "g.faiss", params)
    if kind == "ivfpq":
        assert faiss.extract_index_ivf(loaded).nprobe == 8
    if kind == "hnsw":
        assert faiss.downcast_index(loaded).hnsw.efSearch == 64
    queries = gallery[rng.choice(4000, 200, replace=False)] + rng.normal(0, 0.05, (200, 32)).astype(np.float32)
    exact = faiss.IndexFlatL2(32)
    exact.add(gallery)
    _, truth = exact.search(queries, 1)
    _, got = loaded.search(queries, 1)
    assert (got[:, 0] == truth[:, 0]).mean() >= min_recall


def test_auto_uses_ivfpq_above_flat_max_and_needs_a_sample():
    rng = np.random.default_rng(1)
    x = _clustered(rng, 2000, d=16)
    params = IndexParams(type="auto", flat_max=1000, ivfpq={"nlist": 16, "m": 4})
    index, kind = build_from_chunks([x[:1000], x[1000:]], 2000, 16, params, train_sample=x[::2])
    assert kind == "ivfpq" and index.ntotal == 2000 and isinstance(faiss.downcast_index(index), faiss.IndexIVFPQ)
    with pytest.raises(ValueError, match="training sample"):
        build_from_chunks([x], 2000, 16, params)
    flat, kind = build_from_chunks([x[:500], x[500:]], 2000, 16, IndexParams(type="auto", flat_max=5000))
    assert kind == "flat" and flat.ntotal == 2000


def test_tiny_gallery_gets_fewer_pq_bits():
    from stages.vectors.faiss_index import empty_index

    index = empty_index("ivfpq", 16, 100, IndexParams(ivfpq={"m": 4}))
    assert index.pq.nbits == 6 and faiss.extract_index_ivf(index).nlist == 2  # 2**6 <= 100 points; 100 // 39 lists
    assert empty_index("ivfpq", 16, 10**6, IndexParams(ivfpq={"m": 4})).pq.nbits == 8


class _FakeGpuFaiss:
    """Records what the GPU code path asks of a FAISS GPU build (absent here) and keeps the CPU index."""

    def __init__(self, monkeypatch, n_gpus):
        self.calls = []
        calls = self.calls

        class Options:
            shard = False
            useFloat16 = False

        class ParameterSpace:
            def set_index_parameter(self, index, name, value):
                calls.append(("param", name, value))

        def to_gpu(res, device, index, co):
            calls.append(("to_gpu", device, co.useFloat16))
            return index

        def to_all(index, co):
            calls.append(("to_all", co.shard, co.useFloat16))
            return index

        for name, value in {
            "StandardGpuResources": object,
            "GpuClonerOptions": Options,
            "GpuMultipleClonerOptions": Options,
            "GpuParameterSpace": ParameterSpace,
            "get_num_gpus": lambda: n_gpus,
            "index_cpu_to_gpu": to_gpu,
            "index_cpu_to_all_gpus": to_all,
            "index_gpu_to_cpu": lambda index: calls.append(("to_cpu",)) or index,
        }.items():
            monkeypatch.setattr(faiss, name, value, raising=False)


def test_gpu_dispatch(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    x = _clustered(rng, 1000, d=16)
    fake = _FakeGpuFaiss(monkeypatch, n_gpus=2)
    assert gpu_count(True) == 2 and gpu_count(False) == 0
    ivf = IndexParams(type="ivfpq", ivfpq={"nlist": 8, "m": 4, "nbits": 6, "nprobe": 4})
    index, _ = build_from_chunks([x], 1000, 16, ivf, train_sample=x)
    assert fake.calls == [("to_gpu", 0, True), ("to_cpu",)]  # built on GPU 0, half-precision PQ tables
    faiss.write_index(index, str(tmp_path / "ivf.faiss"))
    fake.calls.clear()
    load_for_search(tmp_path / "ivf.faiss", ivf)
    assert fake.calls == [("to_all", True, True), ("param", "nprobe", 4)]  # sharded over the 2 GPUs

    fake.calls.clear()
    flat, _ = build_from_chunks([x], 1000, 16, IndexParams(type="flat"))
    faiss.write_index(flat, str(tmp_path / "flat.faiss"))
    load_for_search(tmp_path / "flat.faiss", IndexParams(type="flat"))
    assert fake.calls == [("to_gpu", 0, False), ("to_cpu",), ("to_all", True, False)]  # Flat stays float32

    fake.calls.clear()
    hnsw, _ = build_from_chunks([x], 1000, 16, IndexParams(type="hnsw"))
    faiss.write_index(hnsw, str(tmp_path / "hnsw.faiss"))
    load_for_search(tmp_path / "hnsw.faiss", IndexParams(type="hnsw"))
    build_from_chunks([x], 1000, 16, IndexParams(type="flat", gpu=False))
    assert fake.calls == []  # HNSW on the CPU; gpu: false keeps everything on the CPU

    _FakeGpuFaiss(monkeypatch, n_gpus=1)
    calls = []
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index, co: calls.append(co.shard) or index)
    load_for_search(tmp_path / "flat.faiss", IndexParams(type="flat"))
    assert calls == [False]  # one GPU: no sharding
