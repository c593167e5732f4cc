"""NT-Xent (normalised temperature-scaled cross entropy), the Learn-and-Search baseline's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(emb: torch.Tensor, n_views: int, tau: float) -> torch.Tensor:
    """Views stacked [n_views * B, d]; each view's positives are the other views of its crop.

    Mean over anchors of -log( sum_pos exp(s/tau) / sum_{j != i} exp(s/tau) ), s = cosine
    (SimCLR's loss for two views; several views give the multi-positive form).
    """
    z = F.normalize(emb, dim=1)
    n = len(z)
    crop = torch.arange(n // n_views, device=z.device).repeat(n_views)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(eye, float("-inf"))
    pos = (crop[:, None] == crop[None, :]) & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(torch.logsumexp(log_prob.masked_fill(~pos, float("-inf")), dim=1)).mean()


def anchor_nt_xent(views: torch.Tensor, anchors: torch.Tensor, tau: float) -> torch.Tensor:
    """Anchor-based NT-Xent: each augmented view is classified among the batch's anchors.

    ``views`` [V * B, d] stacked by view, ``anchors`` [B, d] (crop c's anchor is the crop itself,
    un-augmented, at the object's own box).  Mean over views i of crop c(i) of
    -log( exp(s(v_i, a_c)/tau) / sum_j exp(s(v_i, a_j)/tau) ), s = cosine: the anchor is the one
    positive and the other crops' anchors are the negatives.  Learn and Search (seed 002) names
    this loss ("ANT-Xent", anchor negatives) without a formula; this is our definition.
    """
    v = F.normalize(views, dim=1)
    a = F.normalize(anchors, dim=1)
    crop = torch.arange(len(a), device=v.device).repeat(len(v) // len(a))
    return F.cross_entropy(v @ a.T / tau, crop)
