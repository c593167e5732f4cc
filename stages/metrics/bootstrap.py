"""Bootstrap intervals over queries: how far a mean over queries could move with other queries.

A metric is a mean of per-query values; resampling the queries with replacement and recomputing
the mean gives its sampling distribution (the percentile bootstrap).  Seeded: the same values and
seed give the same interval.  Memory is bounded: resamples are drawn in blocks of at most
:data:`BLOCK_ENTRIES` indices.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_ENTRIES", "bootstrap_means", "bootstrap_ci", "paired_bootstrap"]

BLOCK_ENTRIES = 1 << 22  # resampled indices held at once (32 MB of int64)


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return values[~np.isnan(values)]


def bootstrap_means(values, resamples: int, seed: int) -> np.ndarray:
    """The means of ``resamples`` resamples (with replacement, same size) of the finite ``values``."""
    values = _finite(values)
    n = values.shape[0]
    if n == 0 or resamples < 1:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_ENTRIES // n)
    means = np.empty(int(resamples))
    for start in range(0, int(resamples), block):  # a few blocks, not queries
        stop = min(start + block, int(resamples))
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def bootstrap_ci(values, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval ``(low, high)`` of the mean of the finite ``values``; None when empty."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    means = bootstrap_means(values, resamples, seed)
    if means.size == 0:
        return None
    # percentile bootstrap (Efron & Tibshirani 1993, ch. 13.3): the (1-level)/2 and (1+level)/2 quantiles of the means
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_bootstrap(a, b, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict | None:
    """Two methods scored on the same queries: the mean difference ``a - b`` and its bootstrap interval.

    ``a`` and ``b`` are per-query values ``[Q]`` in the same query order; queries where either is
    NaN are left out.  Returns ``{"diff", "low", "high", "separated", "queries"}``, ``separated``
    true when 0 lies outside the interval; None when no query has both values.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same queries, got {a.shape[0]} and {b.shape[0]}")
    both = ~np.isnan(a) & ~np.isnan(b)
    diff = a[both] - b[both]
    # paired bootstrap (Koehn 2004; Efron & Tibshirani 1993): resample queries, the same ones for both methods
    interval = bootstrap_ci(diff, resamples, seed, level)
    if interval is None:
        return None
    low, high = interval
    return {
        "diff": float(diff.mean()),
        "low": low,
        "high": high,
        "separated": bool(low > 0 or high < 0),
        "queries": int(both.sum()),
    }
