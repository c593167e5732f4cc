"""Relaxed contrastive loss (paper eq. 4, after STML)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.losses.distances import pair_mask, relative_distance


def relaxed_contrastive(emb: torch.Tensor, weights: torch.Tensor, delta: float = 1.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pairs i != j of w_ij d_ij^2 + (1 - w_ij) [delta - d_ij]_+^2  (eq. 4).

    ``d`` is the relative distance of the L2-normalised ``emb`` [..., n, d]; ``weights``
    [..., n, n] are the teacher's soft labels; ``valid`` [..., n] marks the real rows of padded
    sets (one loss per set). The pair mean (division by n(n-1), as STML's code) rather than the
    printed 1/n keeps the loss scale independent of the batch size.
    """
    d = relative_distance(F.normalize(emb, dim=-1), valid)
    pull = weights * d.pow(2)
    push = (1.0 - weights) * (delta - d).clamp_min(0).pow(2)
    _, pairs = pair_mask(emb.shape[-2], valid, emb.device)
    pairs = pairs.to(emb.dtype)
    return ((pull + push) * pairs).sum((-2, -1)) / pairs.sum((-2, -1)).clamp_min(1.0)
