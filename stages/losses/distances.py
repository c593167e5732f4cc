"""Pairwise and relative Euclidean distances between embeddings.

Every function takes embeddings ``[..., n, d]``: one set, or a batch of sets padded to the same
``n`` with a ``valid`` mask ``[..., n]`` (padding rows must hold finite values; they are ignored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distance(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix [..., n, n] with an exact zero diagonal and finite gradients."""
    sq = x.pow(2).sum(-1)
    d2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * x @ x.mT).clamp_min(eps)
    off = 1.0 - torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
    return d2.sqrt() * off


def relative_distance(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """d_ij = ||f_i - f_j|| / ((1/n) sum_k ||f_i - f_k||), k over the valid rows  (paper, below eq. 3)."""
    d = pairwise_distance(x)
    if valid is None:
        mean = d.mean(-1, keepdim=True)
    else:
        cols = valid.to(d.dtype)[..., None, :]
        mean = (d * cols).sum(-1, keepdim=True) / cols.sum(-1, keepdim=True).clamp_min(1.0)
    return d / mean.clamp_min(1e-12)


def embedding_distances(emb: torch.Tensor, valid: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
    """Relative distances of the embeddings: what eq. 3 and eq. 4 compare. STML's code compares the
    raw head outputs (its ``student_norm`` option, off by default, L2-normalises them first)."""
    return relative_distance(F.normalize(emb, dim=-1) if normalize else emb, valid)


def pair_mask(n: int, valid: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(columns, pairs) boolean masks [..., n, n]: j != i with j valid, and the same with i valid."""
    off = ~torch.eye(n, dtype=torch.bool, device=device)
    if valid is None:
        return off, off
    cols = off & valid[..., None, :]
    return cols, cols & valid[..., :, None]
