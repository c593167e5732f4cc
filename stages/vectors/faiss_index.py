"""FAISS gallery indexes built from embedding shards, never from all vectors at once.

Index types (``index.type``):

* ``flat``: exact L2 search (``IndexFlatL2``), 4*d bytes per object.
* ``ivfpq``: ``IndexIVFPQ``, coarse k-means with ``nlist`` lists trained on a sample of
  ``train_size`` rows drawn across the shards, residuals product-quantised to ``m`` codes of
  ``nbits``; vectors are then added shard by shard (``m`` bytes per object at 8 bits).
* ``hnsw``: ``IndexHNSWFlat`` graph (full vectors plus ~2*M links per object), added shard by shard.
* ``auto``: ``flat`` up to ``flat_max`` gallery objects (1M by default: 2 GB at 512-d, an exact
  search of a few thousand queries stays minutes on a CPU), ``ivfpq`` above (the paper's 9.8M
  Visual Genome gallery: ~0.7 GB of codes instead of 20 GB of floats).

GPU: when the FAISS GPU build sees GPUs (``faiss.get_num_gpus() > 0``) and ``index.gpu`` is on,
Flat and IVF-PQ are trained and filled on GPU 0 and written back as CPU indexes; searching spreads
the index over all GPUs, sharded (``IndexShards``) when there are several.  HNSW stays on the CPU
(FAISS has no GPU HNSW).  Everything falls back to the CPU otherwise.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from stages.config import IndexParams
from stages.errors import InputError
from stages.vectors.shards import iter_vector_chunks, sample_rows, shard_rows

log = logging.getLogger(__name__)
INDEX_TYPES = ("flat", "ivfpq", "hnsw")

__all__ = [
    "INDEX_TYPES",
    "resolve_type",
    "auto_nlist",
    "pq_subquantizers",
    "empty_index",
    "build_from_shards",
    "build_from_chunks",
    "load_for_search",
    "gpu_count",
]


def gpu_count(enabled: bool = True) -> int:
    """GPUs usable by FAISS: 0 with the CPU build, without a GPU, or when disabled."""
    if not enabled or not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def resolve_type(kind: str, n: int, flat_max: int) -> str:
    """The concrete index type for a gallery of ``n`` objects."""
    if kind == "auto":
        return "flat" if n <= flat_max else "ivfpq"
    if kind not in INDEX_TYPES:
        raise ValueError(f"index.type must be auto or one of {', '.join(INDEX_TYPES)}, got {kind!r}")
    return kind


def auto_nlist(n: int) -> int:
    """FAISS guideline nlist ~ 4*sqrt(N), rounded to a power of two, in [16, 65536], at most N/39."""
    nlist = 2 ** round(math.log2(max(4.0 * math.sqrt(max(n, 1)), 1.0)))
    # k-means wants >= 39 training points per centroid
    return int(max(1, min(max(16, nlist), 65536, n // 39 if n >= 39 else 1)))


def pq_subquantizers(m: int, d: int) -> int:
    """The largest divisor of ``d`` that is <= ``m`` (PQ splits the vector into m equal parts)."""
    return max(s for s in range(1, min(m, d) + 1) if d % s == 0)


def empty_index(kind: str, d: int, n: int, params: IndexParams) -> faiss.Index:
    """An untrained index of a concrete type for ``n`` vectors of dimension ``d``."""
    if kind == "flat":
        return faiss.IndexFlatL2(d)
    if kind == "ivfpq":
        cfg = params.ivfpq
        nlist = cfg.nlist or auto_nlist(n)
        # a tiny gallery cannot train 2**nbits PQ centroids: fewer bits then (k-means needs n >= k)
        nbits = min(cfg.nbits, max(1, int(math.log2(max(n, 2)))))
        return faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, pq_subquantizers(cfg.m, d), nbits)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw.M)
        index.hnsw.efConstruction = params.hnsw.ef_construction
        return index
    raise ValueError(f"unknown index type {kind!r}")


def _train_size(index: faiss.Index, n: int, params: IndexParams) -> int:
    if params.ivfpq.train_size:
        return min(n, params.ivfpq.train_size)
    return min(n, max(64 * faiss.extract_index_ivf(index).nlist, 65536))


def _to_single_gpu(index: faiss.Index):
    res = faiss.StandardGpuResources()
    co = faiss.GpuClonerOptions()
    # IVF-PQ: half-precision lookup tables (needed for m = 64 codes); Flat stays float32 (exact)
    co.useFloat16 = faiss.try_extract_index_ivf(index) is not None
    return faiss.index_cpu_to_gpu(res, 0, index, co), res


def build_from_chunks(
    chunks, n: int, d: int, params: IndexParams, train_sample: np.ndarray | None = None, desc: str | None = None
) -> tuple[faiss.Index, str]:
    """Build an index from an iterable of float32 ``[n_i, d]`` chunks; returns (CPU index, concrete type).

    ``train_sample`` trains IVF-PQ (required for ``ivfpq``); the chunks are added one at a time,
    so at most one chunk of raw vectors is held besides the index itself.
    """
    kind = resolve_type(params.type, n, params.flat_max)
    index = empty_index(kind, d, n, params)
    gpu = kind != "hnsw" and gpu_count(params.gpu) > 0
    if gpu:
        index, _res = _to_single_gpu(index)
    if not index.is_trained:
        if train_sample is None or len(train_sample) == 0:
            raise ValueError(f"a {kind} index needs a training sample")
        index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
    for chunk in tqdm(chunks, desc=desc, unit="chunk", disable=desc is None):
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    if gpu:
        index = faiss.index_gpu_to_cpu(index)
    return index, kind


def build_from_shards(
    paths: list[Path], params: IndexParams, seed: int = 0, desc: str | None = None
) -> tuple[faiss.Index, str]:
    """Build the gallery index from embedding shards (``.npy``), shard by shard."""
    if not paths:
        raise InputError("no embedding shards to index")
    n = int(shard_rows(paths).sum())
    d = int(np.load(paths[0], mmap_mode="r").shape[1])
    kind = resolve_type(params.type, n, params.flat_max)
    sample = None
    if kind == "ivfpq":
        probe = empty_index(kind, d, n, params)
        sample = sample_rows(paths, _train_size(probe, n, params), seed=seed)
        log.info(
            "index: training IVF-PQ (nlist %d, m %d) on %d of %d vectors",
            faiss.extract_index_ivf(probe).nlist,
            probe.pq.M,
            len(sample),
            n,
        )
    return build_from_chunks(iter_vector_chunks(paths), n, d, params, sample, desc=desc)


def set_search_params(index: faiss.Index, params: IndexParams) -> None:
    """Search-time knobs: IVF nprobe, HNSW efSearch (no-op for Flat)."""
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        ivf.nprobe = min(params.ivfpq.nprobe, ivf.nlist)
    hnsw = faiss.downcast_index(index)
    if isinstance(hnsw, faiss.IndexHNSW):
        hnsw.hnsw.efSearch = params.hnsw.ef_search


def load_for_search(path: Path, params: IndexParams) -> faiss.Index:
    """Read a written index, set its search parameters, and spread it over the GPUs when present."""
    index = faiss.read_index(str(path))
    set_search_params(index, params)
    n_gpu = gpu_count(params.gpu)
    if n_gpu and not isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        is_ivf = faiss.try_extract_index_ivf(index) is not None
        co = faiss.GpuMultipleClonerOptions()
        co.shard = n_gpu > 1  # each GPU holds 1/n of the gallery (IndexShards), results merged
        co.useFloat16 = is_ivf  # IVF-PQ lookup tables in half precision; Flat stays exact
        index = faiss.index_cpu_to_all_gpus(index, co)
        if is_ivf:  # nprobe on every shard
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", params.ivfpq.nprobe)
    return index
