"""Pairwise and relative Euclidean distances between embeddings."""

from __future__ import annotations

import torch


def pairwise_distance(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix [n, n] with an exact zero diagonal and finite gradients."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(eps)
    off = 1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device)
    return d2.sqrt() * off


def relative_distance(x: torch.Tensor) -> torch.Tensor:
    """d_ij = ||f_i - f_j|| / ((1/n) sum_k ||f_i - f_k||)  (paper, below eq. 3)."""
    d = pairwise_distance(x)
    return d / d.mean(dim=1, keepdim=True).clamp_min(1e-12)
