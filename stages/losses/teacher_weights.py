"""Soft pair labels from teacher embeddings: w_ij of eq. 4 with STML's contextual refinement.

Embeddings ``[..., n, d]``: one set, or a batch of sets padded to the same ``n`` with a
``valid`` mask ``[..., n]`` (padding rows are never anyone's neighbour).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_weights(teacher: torch.Tensor, sigma: float) -> torch.Tensor:
    """W_P: w_ij = exp(-||t_i - t_j||^2 / sigma) on L2-normalised teacher embeddings (eq. 4)."""
    t = F.normalize(teacher, dim=-1)
    d2 = (2.0 - 2.0 * t @ t.mT).clamp_min(0)
    return torch.exp(-d2 / sigma)


def contextual_weights(w_p: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """W_C: mutual k-NN overlap, expanded over each row's k neighbours and symmetrised (STML).

    V_ij = 1 when i and j are in each other's k nearest neighbours (self included);
    W~_ij = V_ij * |N(i) ∩ N(j)| / |N(i)| (share of i's mutual neighbours that j shares);
    W^_i = mean of W~ over i's k neighbours (query expansion); W_C = (W^ + W^T) / 2.
    A set with fewer than k valid rows uses all of them.
    """
    n = w_p.shape[-1]
    k = min(k, n)
    scores = w_p if valid is None else w_p.masked_fill(~valid[..., None, :], -1.0)  # w_p > 0
    top = scores.topk(k, dim=-1).indices  # [..., n, k]
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
    rows = torch.gather(w_tilde, -2, top.flatten(-2)[..., None].expand(*top.shape[:-2], n * k, n))
    rows = rows.unflatten(-2, (n, k))  # [..., n, k, n]: W~ of each of i's neighbours
    w_hat = (rows * picked[..., None]).sum(-2) / picked.sum(-1, keepdim=True).clamp_min(1.0)
    return (w_hat + w_hat.mT) / 2


def teacher_weights(
    teacher: torch.Tensor,
    sigma: float,
    k: int,
    positives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """W = (W_P + W_C) / 2, with the pairs in ``positives`` (e.g. two views of a crop) set to 1."""
    w_p = pairwise_weights(teacher, sigma)
    w = (w_p + contextual_weights(w_p, k, valid)) / 2
    if positives is not None:
        w = torch.maximum(w, positives.to(w.dtype))
    return w.detach()


def view_positives(n_crops: int, n_views: int, device=None) -> torch.Tensor:
    """[n_views*n_crops]^2 mask of pairs that are views of the same crop (views stacked by view)."""
    crop = torch.arange(n_crops, device=device).repeat(n_views)
    return crop[:, None] == crop[None, :]
