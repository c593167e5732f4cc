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


def collaborative_distillation(
    emb: torch.Tensor,
    rows_a: torch.Tensor,
    rows_b: torch.Tensor,
    pair: torch.Tensor,
    n_pairs: int,
    centroids: torch.Tensor,
    tau: float,
    reduce: bool = True,
) -> torch.Tensor:
    """L_CKD = (1/|Q|) sum over group pairs q = (a, b) in Q of L_CKD(G_a, G_b)  (eq. 2), with
    L_CKD(G_a, G_b) = mean over shared crops i of KL(S_a^i || S_b^i)  (eq. 1).

    ``emb`` stacks every head's embeddings; shared crop i of group pair ``pair[i]`` (in
    [0, n_pairs)) is embedded by head a at row ``rows_a[i]`` and by head b at ``rows_b[i]``; both
    heads learn. A pair without shared crops adds 0 to the mean. ``reduce=False``: the [n_pairs]
    values L_CKD(G_a, G_b) (eq. 1) instead of their mean.
    """
    if n_pairs == 0:
        return centroids.new_zeros(()) if reduce else centroids.new_zeros(0)
    log_s = centroid_log_probs(emb, centroids, tau)  # each embedding's S once, for all its pairs
    log_a, log_b = log_s[rows_a], log_s[rows_b]
    kl = (log_a.exp() * (log_a - log_b)).sum(dim=1)
    count = torch.bincount(pair, minlength=n_pairs).clamp_min(1).to(kl.dtype)
    per_pair = kl.new_zeros(n_pairs).index_add(0, pair, kl) / count
    return per_pair.mean() if reduce else per_pair


def ckd_pair(emb_a: torch.Tensor, emb_b: torch.Tensor, centroids: torch.Tensor, tau: float) -> torch.Tensor:
    """L_CKD(G_a, G_b) of one group pair (eq. 1): ``emb_a[i]``, ``emb_b[i]`` embed the same crop."""
    n = len(emb_a)
    rows = torch.arange(n, device=emb_a.device)
    return collaborative_distillation(
        torch.cat([emb_a, emb_b]), rows, rows + n, torch.zeros_like(rows), 1, centroids, tau
    )
