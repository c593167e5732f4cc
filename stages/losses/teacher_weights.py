"""Soft pair labels from teacher embeddings: w_ij of eq. 4 with STML's contextual refinement.

Embeddings ``[..., n, d]``: one set, or a batch of sets padded to the same ``n`` with a
``valid`` mask ``[..., n]`` (padding rows are never anyone's neighbour). As in STML's code
(``RC_STML``), rows of the same crop (its two views, a crop drawn twice) rank first in each other's
neighbour lists, but their weight stays the teacher's (W_P + W_C)/2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_weights(teacher: torch.Tensor, sigma: float) -> torch.Tensor:
    """W_P: w_ij = exp(-||t_i - t_j||^2 / sigma) on L2-normalised teacher embeddings (eq. 4)."""
    t = F.normalize(teacher, dim=-1)
    d2 = (2.0 - 2.0 * t @ t.mT).clamp_min(0)
    return torch.exp(-d2 / sigma)


def contextual_weights(
    w_p: torch.Tensor, k: int, valid: torch.Tensor | None = None, same_crop: torch.Tensor | None = None
) -> torch.Tensor:
    """W_C: mutual k-NN overlap, expanded over each row's first round(k/2) neighbours, symmetrised (STML).

    Each row's k nearest neighbours N(i) are ranked by W_P, with ``same_crop`` pairs (and i itself)
    ranked first, i itself before them; V_ij = 1 when i and j are in each other's N; W~_ij = V_ij |R(i) ∩ R(j)| / |R(i)|
    with R(i) = {j : V_ij = 1}; W^_i = mean of W~_h over the first round(k/2) ranked h of N(i)
    (query expansion); W_C = (W^ + W^T) / 2. A set with fewer than k valid rows ranks all of them.
    """
    n = w_p.shape[-1]
    k = min(k, n)
    scores = w_p if same_crop is None else torch.where(same_crop, torch.ones_like(w_p), w_p)
    scores = scores + 2.0 * torch.eye(n, dtype=w_p.dtype, device=w_p.device)  # i ranks itself first
    if valid is not None:
        scores = scores.masked_fill(~valid[..., None, :], -1.0)  # w_p > 0
    # best first; ties (rows of one crop) by column index: STML leaves their order to torch.topk
    top = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]  # [..., n, k]
    picked = (
        torch.ones_like(top, dtype=w_p.dtype)
        if valid is None
        else torch.gather(valid.to(w_p.dtype)[..., None, :].expand_as(w_p), -1, top)
    )
    nn_mask = torch.zeros_like(w_p).scatter_(-1, top, picked)
    if valid is not None:
        nn_mask = nn_mask * valid.to(w_p.dtype)[..., :, None]
    v = nn_mask * nn_mask.mT
    w_tilde = v * (v @ v.mT) / v.sum(-1, keepdim=True).clamp_min(1.0)
    # query expansion over the first round(k_i / 2) of each row's k_i valid neighbours (STML: round(topk/2))
    k_row = picked.sum(-1, keepdim=True)  # [..., n, 1]
    half = torch.round(k_row / 2).clamp_min(1.0)
    expand = picked * (torch.arange(k, device=w_p.device, dtype=w_p.dtype) < half)
    rows = torch.gather(w_tilde, -2, top.flatten(-2)[..., None].expand(*top.shape[:-2], n * k, n))
    rows = rows.unflatten(-2, (n, k))  # [..., n, k, n]: W~ of each of i's neighbours
    w_hat = (rows * expand[..., None]).sum(-2) / expand.sum(-1, keepdim=True).clamp_min(1.0)
    return (w_hat + w_hat.mT) / 2


def teacher_weights(
    teacher: torch.Tensor,
    sigma: float,
    k: int,
    same_crop: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """W = (W_P + W_C) / 2 (STML), detached; ``same_crop`` [..., n, n] marks rows of one crop."""
    w_p = pairwise_weights(teacher, sigma)
    return ((w_p + contextual_weights(w_p, k, valid, same_crop)) / 2).detach()


def view_positives(n_crops: int, n_views: int, device=None) -> torch.Tensor:
    """[n_views*n_crops]^2 mask of pairs that are views of the same crop (views stacked by view)."""
    crop = torch.arange(n_crops, device=device).repeat(n_views)
    return crop[:, None] == crop[None, :]
