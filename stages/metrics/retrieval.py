"""Retrieval metrics on a boolean relevance matrix.

Every function takes ``rel``: bool ``[Q, K]`` (``rel[q, r]`` = the item at 0-based rank ``r`` of
query ``q``'s returned list is relevant; empty slots are False) and, where needed,
``n_relevant_total``: int ``[Q]``, the number of relevant items in the whole gallery.  Both come
from :func:`stages.metrics.relevance.relevance_matrix`.  Per-query results are float arrays
``[Q]``; everything is vectorised over queries (cumulative sums, no Python loop over queries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "recall_at_k",
    "ap_truncated",
    "ap_standard",
    "precision_at_k",
    "mp_at_k",
    "reciprocal_rank",
    "interpolated_precision",
    "PR_LEVELS",
    "per_query_metrics",
    "percent_of_all",
    "summarize_per_query",
    "summarize",
]


def _as_rel(rel: np.ndarray) -> np.ndarray:
    rel = np.asarray(rel, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"rel must be a [Q, K] matrix, got shape {rel.shape}")
    return rel


def _as_total(n_relevant_total: np.ndarray, n_q: int) -> np.ndarray:
    total = np.asarray(n_relevant_total, dtype=np.int64).reshape(-1)
    if total.shape[0] != n_q:
        raise ValueError(f"n_relevant_total has {total.shape[0]} entries for {n_q} queries")
    return total


def _check_k(k: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def _precision_sum(rel: np.ndarray) -> np.ndarray:
    """Per query, the sum over relevant ranks r of precision@(r+1) = (#relevant in 0..r) / (r+1)."""
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    return np.where(rel, hits / ranks, 0.0).sum(axis=1)


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """1.0 where a relevant item is among the top ``k``, else 0.0."""
    rel = _as_rel(rel)
    # paper "Evaluation Metrics": Recall@k = fraction of queries with at least one relevant item in the top k
    return rel[:, : _check_k(k)].any(axis=1).astype(np.float64)


def ap_truncated(rel: np.ndarray) -> np.ndarray:
    """Average precision over the returned list only (the paper's mAP); 0 where nothing relevant was returned."""
    rel = _as_rel(rel)
    n_hit = rel.sum(axis=1)
    # paper "Evaluation Metrics": AP = (1/#relevant returned) * sum over relevant ranks r of precision@r, top-K list
    return np.where(n_hit > 0, _precision_sum(rel) / np.maximum(n_hit, 1), 0.0)


def ap_standard(rel: np.ndarray, n_relevant_total: np.ndarray) -> np.ndarray:
    """Standard AP: missed relevant gallery items count as misses; NaN where the gallery has none."""
    rel = _as_rel(rel)
    total = _as_total(n_relevant_total, rel.shape[0])
    if np.any(rel.sum(axis=1) > total):
        raise ValueError("a query has more relevant items returned than n_relevant_total")
    # standard (VOC/COCO retrieval) AP = sum over relevant ranks r of precision@r / #relevant in the whole gallery
    return np.where(total > 0, _precision_sum(rel) / np.maximum(total, 1), np.nan)


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Fraction of the top ``k`` slots holding a relevant item (empty slots count as non-relevant)."""
    rel = _as_rel(rel)
    k = _check_k(k)
    # Precision@k = #relevant in the top k / k (seed 003, "universal image embedding" evaluation)
    return rel[:, :k].sum(axis=1) / float(k)


def mp_at_k(rel: np.ndarray, n_relevant_total: np.ndarray, k: int) -> np.ndarray:
    """Modified precision@k: hits in the first min(k, n) ranks over min(k, n), n = #relevant in the
    gallery; NaN where n is 0."""
    rel = _as_rel(rel)
    total = _as_total(n_relevant_total, rel.shape[0])
    k = _check_k(k)
    denom = np.minimum(k, total)
    if rel.shape[1] == 0:
        return np.where(denom > 0, 0.0, np.nan)
    hits = np.cumsum(rel[:, :k], axis=1)
    upto = np.take_along_axis(hits, np.clip(denom - 1, 0, hits.shape[1] - 1)[:, None], axis=1)[:, 0]
    # seed 003 (UnED, compute_knn_metrics): mMP@k = mean_q #relevant in the first min(k, n_q) ranks / min(k, n_q)
    return np.where(denom > 0, upto / np.maximum(denom, 1), np.nan)


def reciprocal_rank(hit: np.ndarray) -> np.ndarray:
    """1 / (1-based rank of the first true item) per query; 0 where the list holds none."""
    hit = _as_rel(hit)
    first = np.argmax(hit, axis=1)
    # MS-GCML utils.calc_img_mAP: AP_q = 1 / rank of the first gallery object of the query's own image, 0 if absent
    return np.where(hit.any(axis=1), 1.0 / (first + 1.0), 0.0)


#: recall levels of the interpolated precision-recall curve (0, 0.05, ..., 1)
PR_LEVELS = np.linspace(0.0, 1.0, 21)


def interpolated_precision(
    rel: np.ndarray, n_relevant_total: np.ndarray, levels: Sequence[float] = PR_LEVELS
) -> np.ndarray:
    """Interpolated precision ``[Q, R]`` at each recall level: the highest precision at any rank whose
    recall (hits / #relevant in the gallery) is >= the level; 0 where the list never reaches it,
    NaN for a query with nothing relevant in the gallery."""
    rel = _as_rel(rel)
    total = _as_total(n_relevant_total, rel.shape[0])
    levels = np.asarray(levels, dtype=np.float64)
    n_q, n_k = rel.shape
    out = np.full((n_q, levels.shape[0]), np.nan)
    if n_k == 0:
        out[total > 0] = 0.0
        return out
    hits = np.cumsum(rel, axis=1, dtype=np.int64)
    precision = hits / np.arange(1, n_k + 1, dtype=np.float64)
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # max precision at rank >= r
    # first rank whose hit count reaches ceil(level * n): one searchsorted over rows laid end to end
    need = np.maximum(np.ceil(levels[None, :] * total[:, None] - 1e-9), 1).astype(np.int64)  # [Q, R]
    offset = np.arange(n_q, dtype=np.int64)[:, None] * (n_k + 1)
    flat = (hits + offset).ravel()
    rank = np.searchsorted(flat, (need + offset).ravel(), side="left").reshape(n_q, -1) - offset // (n_k + 1) * n_k
    reached = (need <= hits[:, -1:]) & (rank < n_k)
    value = np.take_along_axis(best_after, np.clip(rank, 0, n_k - 1), axis=1)
    # VOC 11-point style interpolation: p_interp(r) = max_{r' >= r} p(r') (Everingham et al. 2010, eq. 1)
    out[:] = np.where(reached, value, 0.0)
    out[total <= 0] = np.nan
    return out


def _percent(values: np.ndarray) -> float | None:
    """Mean of the finite values, in percent rounded to 4 decimals; None when there are none."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    return round(float(values.mean()) * 100.0, 4)


def metric_keys(ks: Sequence[int] = (1, 5, 10), mp_k: int = 5, short: int | None = None) -> list[str]:
    """The metric keys of one :func:`summarize` entry, in order (besides the counts)."""
    return (
        [f"R@{int(k)}" for k in ks]
        + ["mAP"]
        + ([f"mAP@{int(short)}"] if short else [])
        + ["mAP_std", f"P@{mp_k}", f"mMP@{mp_k}"]
    )


def per_query_metrics(
    rel: np.ndarray,
    n_relevant_total: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    mp_k: int = 5,
    short: int | None = None,
) -> dict[str, np.ndarray]:
    """Every metric of :func:`metric_keys` per query (fractions in [0, 1], NaN where undefined).

    ``mAP`` and ``mAP_std`` score the whole list ``rel``; ``mAP@<short>`` its first ``short`` items.
    """
    rel = _as_rel(rel)
    total = _as_total(n_relevant_total, rel.shape[0])
    per_query: dict[str, np.ndarray] = {f"R@{int(k)}": recall_at_k(rel, k) for k in ks}
    per_query["mAP"] = ap_truncated(rel)
    if short:
        per_query[f"mAP@{int(short)}"] = ap_truncated(rel[:, : int(short)])
    per_query["mAP_std"] = ap_standard(rel, total)
    per_query[f"P@{mp_k}"] = precision_at_k(rel, mp_k)
    per_query[f"mMP@{mp_k}"] = mp_at_k(rel, total, mp_k)
    return per_query


def percent_of_all(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Sum of a subset's per-query values over the number of ALL queries with a value, in percent.

    The authors' known / unknown Recall@k (MS-GCML utils.calc_recall_at_k): the subset's hits divided
    by every query of the evaluation, so that known + unknown = all.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    finite = ~np.isnan(values)
    if not finite.any():
        return None
    return round(float(values[mask & finite].sum() / finite.sum()) * 100.0, 4)


def summarize_per_query(
    per_query: Mapping[str, np.ndarray], n_relevant_total: np.ndarray, masks: Mapping[str, np.ndarray]
) -> dict[str, dict[str, int | float | None]]:
    """Average per-query metrics (possibly gathered chunk by chunk) over each query subset; see :func:`summarize`."""
    total = np.asarray(n_relevant_total, dtype=np.int64).reshape(-1)
    n_q = total.shape[0]
    out: dict[str, dict[str, int | float | None]] = {}
    for name, mask in masks.items():  # a handful of subsets, not queries
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if mask.shape[0] != n_q:
            raise ValueError(f"mask {name!r} has {mask.shape[0]} entries for {n_q} queries")
        entry: dict[str, int | float | None] = {
            "queries": int(mask.sum()),
            "no_relevant": int((total[mask] == 0).sum()),
        }
        for key, values in per_query.items():
            entry[key] = _percent(np.asarray(values)[mask])
        out[str(name)] = entry
    return out


def summarize(
    rel: np.ndarray,
    n_relevant_total: np.ndarray,
    masks: Mapping[str, np.ndarray],
    ks: Sequence[int] = (1, 5, 10),
    mp_k: int = 5,
) -> dict[str, dict[str, int | float | None]]:
    """Metrics per query subset, JSON-serialisable.

    For each ``name, mask`` in ``masks`` (bool ``[Q]``, e.g. ``all`` / ``known`` / ``unknown``)::

        {"queries": int,              # queries in the mask
         "no_relevant": int,          # of those, queries with no relevant item in the gallery
         "R@1": .., "R@5": .., "R@10": ..,   # one per ks
         "mAP": ..,                   # paper (truncated) AP, all queries of the mask
         "mAP_std": ..,               # standard AP, queries without relevant items excluded
         "P@5": .., "mMP@5": ..}      # mMP excludes queries without relevant items too

    Values are percent, rounded to 4 decimals; a metric with no query to average is None.
    """
    rel = _as_rel(rel)
    total = _as_total(n_relevant_total, rel.shape[0])
    return summarize_per_query(per_query_metrics(rel, total, ks, mp_k), total, masks)
