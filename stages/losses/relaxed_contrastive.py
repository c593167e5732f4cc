"""Relaxed contrastive loss (paper eq. 4, after STML)."""

from __future__ import annotations

import torch

from stages.losses.distances import relative_distance


def relaxed_contrastive(emb: torch.Tensor, weights: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Mean over pairs i != j of w_ij d_ij^2 + (1 - w_ij) [delta - d_ij]_+^2  (eq. 4).

    ``d`` is the relative distance of the L2-normalised ``emb``; ``weights`` [n, n] are the
    teacher's soft labels.  The pair mean (division by n(n-1), as STML's code) rather than the
    printed 1/n keeps the loss scale independent of the batch size.
    """
    n = len(emb)
    d = relative_distance(torch.nn.functional.normalize(emb, dim=1))
    pull = weights * d.pow(2)
    push = (1.0 - weights) * (delta - d).clamp_min(0).pow(2)
    off = 1.0 - torch.eye(n, dtype=emb.dtype, device=emb.device)
    return ((pull + push) * off).sum() / max(1, n * (n - 1))
