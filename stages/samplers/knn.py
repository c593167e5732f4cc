"""k-NN batch sampler: each query brings its k-1 nearest neighbours from its own scale group.

The neighbour graph is built with FAISS over each group separately (exact inner product on
L2-normalised embeddings up to ``exact_max`` crops per group; above it, candidates from an IVF
index of product-quantised codes, built and searched chunk by chunk, re-ranked exactly from the
embeddings) and refreshed by the trainer on a schedule.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
from tqdm import tqdm

from stages.vectors.faiss_index import gpu_count, pq_subquantizers
from stages.vectors.rows import ArrayRows


def group_quotas(
    group_sizes: np.ndarray, queries: int, group_area: np.ndarray | None = None, min_share: float = 0.1
) -> np.ndarray:
    """Queries per group (largest remainders), each non-empty group >= 1: proportional to group size,
    or with ``group_area`` (mean box area per group) to size x mean area with a floor of
    ``min_share`` of the queries per group (the authors' sampler, on each group's own size)."""
    sizes = np.asarray(group_sizes, dtype=np.float64)
    quota = np.zeros(len(sizes), dtype=np.int64)
    if sizes.sum() <= 0:
        return quota
    weight = sizes if group_area is None else sizes * np.asarray(group_area, dtype=np.float64)
    fraction = weight / weight.sum()
    if group_area is not None:
        fraction = np.where(sizes > 0, np.maximum(fraction, min_share), 0.0)
        fraction = fraction / fraction.sum()
    share = fraction * queries
    quota = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - quota), kind="stable")
    quota[order[: queries - quota.sum()]] += 1
    starved = np.flatnonzero((sizes > 0) & (quota == 0))
    for g in starved:  # at most n_groups iterations: give each empty-handed group one query
        quota[np.argmax(quota)] -= 1
        quota[g] += 1
    return quota


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def _self_first(found: np.ndarray, me: np.ndarray, k: int) -> np.ndarray:
    """Search results [n, c] (ids, -1 = none) of queries ``me`` [n] -> [n, k]: the query first,
    then its results without it in rank order; missing ones repeat the found neighbours (the
    query itself when none was found), so every row keeps the batch shape."""
    n = len(found)
    others = np.where((found == me[:, None]) | (found < 0), -1, found)
    order = np.argsort(others < 0, axis=1, kind="stable")
    others = np.take_along_axis(others, order, axis=1)[:, : k - 1]
    if others.shape[1] < k - 1:
        others = np.concatenate([others, np.full((n, k - 1 - others.shape[1]), -1)], axis=1)
    have = (others >= 0).sum(1)[:, None]
    col = np.arange(k - 1)[None, :]
    rep = np.take_along_axis(others, col % np.maximum(have, 1), axis=1)
    rep = np.where(have > 0, rep, me[:, None])
    return np.concatenate([me[:, None], np.where(col < have, others, rep)], axis=1)


def _ivf_lists(n: int) -> int:
    """Inverted lists of a group's IVF-PQ index: ~sqrt(n), a power of two, >= 64 training rows each."""
    return int(max(1, min(65_536, 2 ** round(math.log2(max(math.sqrt(n), 1))), n // 64)))


RERANK = 2  # default candidates per neighbour taken from the compressed index, re-ranked on the full vectors
RERANK_ROWS = 1024  # queries whose candidates are gathered at once (1024 x rerank (k + 1) x d floats)
SEARCH_ROWS = 16_384  # rows per FAISS add/search call of a large group (its buffers grow with them)


def _code_index(d: int, nlist: int, gpu: bool, pq_m: int | None) -> faiss.Index:
    """The untrained compressed index of a large group (inner product on normalised vectors).

    CPU: IVF + 4-bit fast-scan PQ with d/4 sub-quantizers (d/8 bytes per crop; FAISS scans these
    codes with SIMD lookups, ~8x faster than 8-bit PQ here). GPU (the FAISS GPU build has no
    fast-scan): IVF + 8-bit PQ with ``pq_m`` (64) sub-quantizers."""
    if gpu:
        m = pq_subquantizers(pq_m or 64, d)
        return faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    m = pq_subquantizers(pq_m or max(1, d // 4), d)
    return faiss.index_factory(d, f"IVF{nlist},PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)


def _rerank(store, x: np.ndarray, candidates: np.ndarray, me: np.ndarray, to_store: np.ndarray, k: int) -> np.ndarray:
    """Exact re-ranking: queries ``x`` (normalised) [n, d] with candidate ids [n, c] (group-local,
    -1 = none) -> [n, k] group-local ids, the query ``me`` first, then its candidates by exact inner
    product with their vectors, read from ``store`` (rows ``to_store[id]``)."""
    out = np.empty((len(x), k), dtype=np.int64)
    for lo in range(0, len(x), RERANK_ROWS):
        c = candidates[lo : lo + RERANK_ROWS]
        valid = c >= 0
        vectors = _normalised(store.take(to_store[np.where(valid, c, 0)].reshape(-1))).reshape(*c.shape, -1)
        score = np.matmul(vectors, x[lo : lo + len(c), :, None])[..., 0]  # [n, c] inner products
        score = np.where(valid, score, -np.inf)
        order = np.argsort(-score, axis=1, kind="stable")
        ranked = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(c, order, 1), -1)
        out[lo : lo + len(c)] = _self_first(ranked, me[lo : lo + len(c)], k)
    return out


def _on_gpu(index: faiss.Index) -> faiss.Index:
    """``index`` on every GPU of the FAISS GPU build (IVF-PQ with float16 lookup tables), else itself."""
    if gpu_count() == 0:
        return index
    co = faiss.GpuMultipleClonerOptions()
    co.useFloat16 = faiss.try_extract_index_ivf(index) is not None
    return faiss.index_cpu_to_all_gpus(index, co)


class KnnBatchSampler:
    """Batches of ``queries`` queries, each with its ``k - 1`` nearest neighbours from its own
    scale group (the query first), from a k-NN graph rebuilt by :meth:`refresh`; with
    ``scope="all"`` the neighbours come from every group (one graph), the queries still by group.

    A group of at most ``exact_max`` embedded crops is searched exactly (FAISS flat inner product
    on the L2-normalised embeddings; on the GPU when the FAISS GPU build sees one). A larger one
    gets an IVF index of PQ codes (:func:`_code_index`: d/8 bytes per crop on the CPU), built and
    searched chunk by chunk; its ``rerank * (k + 1)`` candidates per query are re-ranked by the
    exact inner product, read back from the store, so the refresh never holds more than a chunk
    of float vectors. Memory per crop: the graph (``8 k`` bytes), the group (8) and the member
    list (8), plus the codes of the group being searched. Queries are spread over the groups by
    :func:`group_quotas` (by size, or by size x mean box area with ``group_area``)."""

    def __init__(
        self,
        group_of: np.ndarray,
        n_groups: int,
        queries: int,
        k: int,
        seed: int,
        *,
        group_area: np.ndarray | None = None,
        exact_max: int = 50_000,
        nprobe: int = 16,
        pq_m: int | None = None,
        rerank: int = RERANK,
        scope: str = "group",
    ):
        if scope not in ("group", "all"):
            raise ValueError(f"scope must be 'group' or 'all', got {scope!r}")
        self.scope = scope
        self.group_of = np.asarray(group_of, dtype=np.int64)
        self.n_groups = n_groups
        self.queries = queries
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.exact_max, self.nprobe, self.pq_m, self.rerank = exact_max, nprobe, pq_m, rerank
        self.members = [np.flatnonzero(self.group_of == g) for g in range(n_groups)]
        self.quotas = group_quotas(np.array([len(m) for m in self.members]), queries, group_area)
        self.neighbours: np.ndarray | None = None  # [N, k] global indices, self first
        self.active: list[np.ndarray] | None = None  # per group, the crops of the last refresh (None: all)

    def refresh_rows(self, share: float, seed: int) -> np.ndarray | None:
        """The crops a refresh embeds: all (None), or a seeded random ``share`` of each group
        (at least k of it, sorted: the shards are then read in order)."""
        if share >= 1:
            return None
        rng = np.random.default_rng(seed)
        picks = [
            rng.choice(m, min(len(m), max(self.k, math.ceil(share * len(m)))), replace=False) for m in self.members
        ]
        return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)

    def refresh(self, embeddings, rows: np.ndarray | None = None) -> None:
        """Rebuild each group's k-NN graph from ``embeddings`` (an [n, d] array, or a row store of
        :mod:`stages.vectors.rows`), the embeddings of crops ``rows`` (None: all N, in order).
        With ``rows``, batches are drawn from those crops only until the next refresh."""
        store = ArrayRows(embeddings) if isinstance(embeddings, np.ndarray) else embeddings
        n = len(self.group_of)
        rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        group = self.group_of[rows]
        nbrs = self.neighbours if self.neighbours is not None else np.repeat(np.arange(n)[:, None], self.k, 1)
        positions = [np.flatnonzero(group == g) for g in range(self.n_groups)]  # rows of the store per group
        self.active = None if len(rows) == n else [rows[p] for p in positions]
        if self.scope == "all":  # one graph over every group's crops
            positions = [np.arange(len(rows))]
        large = [g for g, p in enumerate(positions) if len(p) > self.exact_max]
        for g, pos in enumerate(positions):  # a handful of groups, each searched in one FAISS call
            if len(pos) == 0 or g in large:
                continue
            x = _normalised(store.take(pos))
            index = _on_gpu(faiss.IndexFlatIP(x.shape[1]))
            index.add(x)
            kk = min(self.k, len(pos))
            _, local = index.search(x, kk)
            local = np.where(local < 0, np.arange(len(pos))[:, None], local)
            local[:, 0] = np.arange(len(pos))  # the query itself leads its neighbours
            if kk < self.k:  # tiny group: repeat neighbours to keep the batch shape
                local = np.concatenate([local, local[:, np.arange(self.k - kk) % kk]], axis=1)
            nbrs[rows[pos]] = rows[pos][local]
        if large:
            self._refresh_large(store, rows, positions, large, nbrs)
        self.neighbours = nbrs

    def _refresh_large(self, store, rows, positions, large, nbrs) -> None:
        """One large group at a time: a compressed index trained on a seeded sample of the group,
        filled with the group's rows of the store chunk by chunk (pass 1), then each chunk searched
        and its candidates re-ranked exactly (pass 2); the index is freed before the next group."""
        d = store.shape[1]
        gpu = gpu_count() > 0
        for g in large:
            pos = positions[g]  # the group's rows of the store
            crops = rows[pos]  # and their crops
            n_g = len(pos)
            nlist = _ivf_lists(n_g)
            sample = np.random.default_rng(g).choice(n_g, min(n_g, 64 * nlist), replace=False)
            index = _code_index(d, nlist, gpu, self.pq_m)
            index.train(_normalised(store.take(pos[np.sort(sample)])))
            faiss.extract_index_ivf(index).nprobe = min(self.nprobe, nlist)  # copied to the GPU by the cloner
            index = _on_gpu(index)
            starts = range(0, n_g, SEARCH_ROWS)
            for what in ("add", "search"):
                for lo in tqdm(starts, desc=f"k-NN graph, group {g}: {what}", unit="chunk", leave=False):
                    me = np.arange(lo, min(n_g, lo + SEARCH_ROWS))
                    x = _normalised(store.take(pos[me]))
                    if what == "add":
                        index.add_with_ids(x, me)
                        continue
                    _, found = index.search(x, self.rerank * (self.k + 1))
                    nbrs[crops[me]] = crops[_rerank(store, x, found, me, pos, self.k)]
            del index

    def sample(self) -> np.ndarray:
        """One batch of queries*k object indices: per group, quota queries and their neighbours."""
        if self.neighbours is None:
            raise RuntimeError("call refresh() with embeddings before sampling")
        members = self.members if self.active is None else self.active
        picks = [self.rng.choice(m, size=q, replace=len(m) < q) for m, q in zip(members, self.quotas) if q > 0]
        queries = np.concatenate(picks)
        return self.neighbours[queries].reshape(-1)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "neighbours": self.neighbours, "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.neighbours = state["neighbours"]
        self.active = state.get("active")
