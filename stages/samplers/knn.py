"""k-NN batch sampler: each query brings its k-1 nearest neighbours from its own scale group.

The neighbour graph is built with FAISS (exact inner product on L2-normalised embeddings)
over each group separately and refreshed by the trainer on a schedule.
"""

from __future__ import annotations

import faiss
import numpy as np


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


class KnnBatchSampler:
    """Batches of ``queries`` k-NN lists, the queries spread over the groups by :func:`group_quotas`."""

    def __init__(
        self,
        group_of: np.ndarray,
        n_groups: int,
        queries: int,
        k: int,
        seed: int,
        group_area: np.ndarray | None = None,
    ):
        self.group_of = np.asarray(group_of, dtype=np.int64)
        self.n_groups = n_groups
        self.queries = queries
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.members = [np.flatnonzero(self.group_of == g) for g in range(n_groups)]
        self.quotas = group_quotas(np.array([len(m) for m in self.members]), queries, group_area)
        self.neighbours: np.ndarray | None = None  # [N, k] global indices, self first

    def refresh(self, embeddings: np.ndarray) -> None:
        """Rebuild each group's k-NN graph from embeddings [N, d] (one per object)."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        faiss.normalize_L2(emb)
        nbrs = np.empty((len(emb), self.k), dtype=np.int64)
        for members in self.members:  # a handful of groups, each searched in one FAISS call
            if len(members) == 0:
                continue
            index = faiss.IndexFlatIP(emb.shape[1])
            index.add(emb[members])
            kk = min(self.k, len(members))
            _, local = index.search(emb[members], kk)
            local = np.where(local < 0, np.arange(len(members))[:, None], local)
            local[:, 0] = np.arange(len(members))  # the query itself leads its neighbours
            if kk < self.k:  # tiny group: repeat neighbours to keep the batch shape
                local = np.concatenate([local, local[:, np.arange(self.k - kk) % kk]], axis=1)
            nbrs[members] = members[local]
        self.neighbours = nbrs

    def sample(self) -> np.ndarray:
        """One batch of queries*k object indices: per group, quota queries and their neighbours."""
        if self.neighbours is None:
            raise RuntimeError("call refresh() with embeddings before sampling")
        picks = [self.rng.choice(m, size=q, replace=len(m) < q) for m, q in zip(self.members, self.quotas) if q > 0]
        queries = np.concatenate(picks)
        return self.neighbours[queries].reshape(-1)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "neighbours": self.neighbours}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.neighbours = state["neighbours"]
