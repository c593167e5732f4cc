"""Learn-and-Search diagnostics (seed 002) on a ranked, proposal-based gallery.

The paper names its metrics (similarity-grid accuracy, average positive and negative
similarity, top-k accuracy) without formulas; the definitions here are ours, adapted to a gallery
of object proposals: the proposals of an image are the cells of its similarity grid.

Every function takes one chunk's ranking: ``ranked`` ``[Q, K]`` gallery rows (``-1`` = empty
slot) and, where needed, ``sim`` ``[Q, K]`` their cosine similarities to the query.  A dense
similarity matrix ``[Q, G]`` becomes one with :func:`rank_by_similarity`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_by_similarity", "cosine_from_l2", "grid_hits", "mean_similarity"]


def rank_by_similarity(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dense ``[Q, G]`` similarity matrix as a ranking: ``(ranked, sim)``, most similar first
    (ties: lower gallery row first)."""
    sim = np.asarray(sim, dtype=np.float64)
    ranked = np.argsort(-sim, axis=1, kind="stable")
    return ranked, np.take_along_axis(sim, ranked, axis=1)


def cosine_from_l2(sq_dist: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit vectors from their squared Euclidean distance: 1 - d^2 / 2."""
    # ||a - b||^2 = 2 - 2 cos(a, b) for ||a|| = ||b|| = 1
    return 1.0 - np.asarray(sq_dist, dtype=np.float64) / 2.0


def grid_hits(
    ranked: np.ndarray,
    query_image: np.ndarray,
    query_box: np.ndarray,
    gallery_image: np.ndarray,
    gallery_boxes: np.ndarray,
) -> np.ndarray:
    """Similarity-grid accuracy per query: 1.0 when the most similar proposal of the query's own
    image has its centre inside the query box (closed box), 0.0 when not, NaN when no proposal of
    the query's image is in the list.  ``ranked`` must be the unfiltered ranking."""
    ranked = np.asarray(ranked, dtype=np.int64)
    valid = ranked >= 0
    safe = np.where(valid, ranked, 0)
    own = valid & (np.asarray(gallery_image)[safe] == np.asarray(query_image).reshape(-1, 1))
    found = own.any(axis=1)
    best = safe[np.arange(ranked.shape[0]), np.argmax(own, axis=1)]  # first own-image item = its argmax cell
    boxes = np.asarray(gallery_boxes, dtype=np.float64)[best]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    q = np.asarray(query_box, dtype=np.float64).reshape(-1, 4)
    inside = (q[:, 0] <= cx) & (cx <= q[:, 2]) & (q[:, 1] <= cy) & (cy <= q[:, 3])
    # seed 002 SGA (proposal, ours): the argmax cell of the crop-to-image similarity grid lies in the crop's box
    return np.where(found, inside.astype(np.float64), np.nan)


def mean_similarity(sim: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per query, the mean of ``sim`` over the items where ``mask`` is true; NaN where there are none."""
    sim = np.asarray(sim, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool) & np.isfinite(sim)
    count = mask.sum(axis=1)
    # seed 002 "Average Positive / Negative" (proposal, ours): mean cosine similarity to the positives / negatives
    return np.where(count > 0, np.where(mask, sim, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
