"""Collaborative knowledge distillation between scale groups (paper eq. 1–2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def centroid_log_probs(emb: torch.Tensor, centroids: torch.Tensor, tau: float) -> torch.Tensor:
    """log S: row-wise log-softmax of cosine similarity to the centroids over a temperature.

    The paper's S_m is a "normalised similarity" to the k-means centroids C; the authors' code
    used positive distances as logits (favouring the farthest centroid), which we do not repeat.
    """
    sim = F.normalize(emb, dim=1) @ F.normalize(centroids, dim=1).T
    return F.log_softmax(sim / tau, dim=1)


def ckd_pair(emb_a: torch.Tensor, emb_b: torch.Tensor, centroids: torch.Tensor, tau: float) -> torch.Tensor:
    """L_CKD(G_a, G_b): mean over shared objects i of KL(S_a^i || S_b^i)  (eq. 1).

    ``emb_a[i]`` and ``emb_b[i]`` embed the same crop with head a and head b; both heads learn.
    """
    if len(emb_a) == 0:
        return emb_a.sum() * 0.0
    log_a = centroid_log_probs(emb_a, centroids, tau)
    log_b = centroid_log_probs(emb_b, centroids, tau)
    return (log_a.exp() * (log_a - log_b)).sum(dim=1).mean()


def collaborative_distillation(pairs: list[tuple[torch.Tensor, torch.Tensor]], centroids: torch.Tensor, tau: float) -> torch.Tensor:
    """L_CKD = (1/|Q|) sum over group pairs (a, b) in Q of L_CKD(G_a, G_b)  (eq. 2)."""
    if not pairs:
        return centroids.new_zeros(())
    return torch.stack([ckd_pair(a, b, centroids, tau) for a, b in pairs]).mean()
