"""Relaxed contrastive loss (paper eq. 4, after STML)."""

from __future__ import annotations

import torch

from stages.losses.distances import embedding_distances, pair_mask


def relaxed_contrastive(
    emb: torch.Tensor, weights: torch.Tensor, delta: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over pairs i != j of w_ij d_ij^2 + (1 - w_ij) [delta - d_ij]_+^2  (eq. 4).

    ``d`` is the relative distance of the L2-normalised ``emb`` [..., n, d]; ``weights``
    [..., n, n] are the teacher's soft labels; ``valid`` [..., n] marks the real rows of padded
    sets (one loss per set). The pair mean (division by n(n-1), as STML's code) rather than the
    printed 1/n keeps the loss scale independent of the batch size.
    """
    return relaxed_contrastive_on_distances(embedding_distances(emb, valid), weights, delta, valid)


def relaxed_contrastive_on_distances(
    d: torch.Tensor, weights: torch.Tensor, delta: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`relaxed_contrastive` from the embeddings' distances ``d`` (:func:`embedding_distances`)."""
    pull = weights * d.pow(2)
    push = (1.0 - weights) * (delta - d).clamp_min(0).pow(2)
    _, pairs = pair_mask(d.shape[-1], valid, d.device)
    pairs = pairs.to(d.dtype)
    return ((pull + push) * pairs).sum((-2, -1)) / pairs.sum((-2, -1)).clamp_min(1.0)
