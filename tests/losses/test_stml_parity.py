"""STML parity: our vectorised (and padded-batch) losses equal STML's formulation on the same inputs.

The reference below restates STML's loss (``code/loss.py`` of tjddus9597/STML-CVPR22: ``RC_STML``,
``KL_STML``, ``STML_loss``) row by row with Python loops, as a reader would check it by hand:

  W_P[i,j] = exp(-||t_i - t_j||^2 / sigma), t L2-normalised
  T_i      = top-k columns of W_P with same-crop entries set to 1 (k = neighbours x views)
  H_i      = the first round(k/2) of T_i (best first)
  R_i      = {j : j in T_i and i in T_j}
  C[i,j]   = |R_i & R_j| / |R_i| for j in R_i
  W_C      = sym(mean over h in H_i of C[h]),  W = (W_P + W_C) / 2  (same-crop weights NOT forced to 1)
  d[i,j]   = ||s_i - s_j|| / mean_l ||s_i - s_l||   (raw student rows, the 0 diagonal in the mean)
  L_RC     = sum_{i != j} [W d^2 + (1 - W) relu(delta - d)^2] / (N (N - 1))
  L_KL     = (1/N) sum_i KL(softmax(-d_g[i]) || softmax(-d_f[i])), diagonal included, g detached
  L        = (L_RC(f) + L_RC(g)) / 2 + L_KL
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stages.config import TrainParams
from stages.losses import (
    embedding_distances,
    relaxed_contrastive_on_distances,
    self_distillation_on_distances,
    teacher_weights,
)
from stages.model import EmbeddingHead
from stages.train.methods import ugcml_terms


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _l2n(x: torch.Tensor) -> torch.Tensor:
    """Divide each row by its norm (like F.normalize: eps 1e-12)."""
    return F.normalize(x, p=2, dim=1)


def _dist_row(x: torch.Tensor, i: int) -> torch.Tensor:
    """Euclidean distances from row i to all rows; entry i is exactly 0.

    The sqrt is kept away from 0 so the diagonal gets no NaN/inf gradient
    (STML's torch.cdist also passes no gradient through its ~0 diagonal).
    """
    sq = ((x - x[i : i + 1]) ** 2).sum(dim=1)  # (N,)
    is_self = torch.zeros_like(sq, dtype=torch.bool)
    is_self[i] = True
    safe = torch.where(is_self, torch.ones_like(sq), sq)
    return torch.where(is_self, torch.zeros_like(sq), safe.sqrt())


def _row_normalised_distances(x: torch.Tensor) -> torch.Tensor:
    """Matrix d[i,j] = ||x_i - x_j|| / mean_j ||x_i - x_j||, built row by row.

    The row mean is over all N entries, the 0 diagonal included, and the
    gradient also flows through the mean (STML does not detach it).
    """
    rows = []
    for i in range(x.shape[0]):
        r = _dist_row(x, i)
        rows.append(r / r.mean())
    return torch.stack(rows, dim=0)


@torch.no_grad()
def stml_target_weights(t_emb: torch.Tensor, idx: torch.Tensor, sigma: float, topk: int) -> torch.Tensor:
    """Teacher-side soft similarity W = (W_P + W_C) / 2, computed row by row.

    Note on ties: every j with idx_j == idx_i gets the value 1 in W_P', so
    those entries tie. The order within a tie decides which columns fall in
    H_i (the first round(k/2)). Here a stable descending sort is used
    (lower column index first); torch.topk does not promise any tie order,
    so a vectorised implementation may differ when a tie crosses the
    round(k/2) cut (only when one crop has more than round(k/2) rows, e.g.
    3 repeats x 2 views with k = 10).
    """
    t = _l2n(t_emb)
    n = t.shape[0]
    k = min(int(topk), n)  # STML would fail if topk > N
    k_half = int(round(topk / 2))  # Python's round = np.around (half to even)

    # W_P, one row at a time
    w_p = torch.zeros(n, n, dtype=t.dtype, device=t.device)
    for i in range(n):
        w_p[i] = torch.exp(-(((t - t[i : i + 1]) ** 2).sum(dim=1)) / sigma)

    # ranked neighbour lists from W_P' (rows of the same crop forced to 1)
    top_sets, half_lists = [], []
    for i in range(n):
        row = w_p[i].clone()
        row[idx == idx[i]] = 1.0
        row[i] = 2.0  # the row itself first, then tied rows by index (STML leaves ties to torch.topk)
        order = torch.sort(row, descending=True, stable=True).indices.tolist()
        top_sets.append(set(order[:k]))
        half_lists.append(order[:k_half])

    # mutual (reciprocal) k-NN sets; i is always in its own set
    recip = [{j for j in top_sets[i] if i in top_sets[j]} for i in range(n)]

    # C[i, j] = |R_i n R_j| / |R_i| for j in R_i
    c = torch.zeros(n, n, dtype=t.dtype, device=t.device)
    for i in range(n):
        for j in recip[i]:
            c[i, j] = len(recip[i] & recip[j]) / len(recip[i])

    # query expansion over the first round(k/2) ranked neighbours of i
    c_hat = torch.zeros_like(c)
    for i in range(n):
        acc = torch.zeros(n, dtype=t.dtype, device=t.device)
        for h in half_lists[i]:
            acc += c[h]
        c_hat[i] = acc / len(half_lists[i])

    w_c = (c_hat + c_hat.t()) / 2
    return (w_p + w_c) / 2


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------
def stml_rc_loss(
    s_emb: torch.Tensor,
    t_emb: torch.Tensor,
    idx: torch.Tensor,
    sigma: float = 1.0,
    delta: float = 1.0,
    topk: int = 10,
    student_norm: bool = False,
) -> torch.Tensor:
    """Relaxed contrastive loss of one student embedding against the teacher.

    s_emb: (N, D_s) student embeddings (f or g head), all views stacked.
    t_emb: (N, D_t) teacher g-head embeddings of the same rows (no grad).
    idx:   (N,) crop index of each row (same value for views and repeats).
    sigma: kernel width of W_P (STML argparse default 1; README runs use 3).
    delta: push margin on the row-normalised distance (default 1; SOP 0.9).
    topk:  neighbourhood size k; STML passes num_neighbors * views = 10.
    student_norm: L2-normalise the student rows first (STML default: off).
    """
    if student_norm:
        s_emb = _l2n(s_emb)
    n = s_emb.shape[0]
    w = stml_target_weights(t_emb, idx, sigma, topk).to(s_emb.dtype)
    d = _row_normalised_distances(s_emb)

    total = s_emb.new_zeros(())
    for i in range(n):
        for j in range(n):
            if i == j:  # diagonal is left out
                continue
            pull = w[i, j] * d[i, j] ** 2
            push = (1 - w[i, j]) * torch.relu(delta - d[i, j]) ** 2
            total = total + pull + push
    return total / (n * (n - 1))


def stml_kl_loss(s_g: torch.Tensor, s_f: torch.Tensor, student_norm: bool = False) -> torch.Tensor:
    """Self-distillation: KL(P_g || Q_f) row by row, averaged over N rows.

    P_g[i] = softmax_j(-d_g[i, j]) (target, detached), Q_f[i] = softmax_j(-d_f[i, j]),
    d = row-mean-normalised Euclidean distances, temperature 1, diagonal
    (d = 0, the largest logit) INCLUDED in the softmax. Only s_f gets gradient.
    """
    if student_norm:
        s_f, s_g = _l2n(s_f), _l2n(s_g)
    d_f = _row_normalised_distances(s_f)
    with torch.no_grad():
        d_g = _row_normalised_distances(s_g)
    n = s_f.shape[0]
    total = s_f.new_zeros(())
    for i in range(n):
        log_q = F.log_softmax(-d_f[i], dim=0)
        p = F.softmax(-d_g[i], dim=0)
        log_p = torch.log(p.clamp_min(1e-30))
        total = total + (p * (log_p - log_q)).sum()
    return total / n


def stml_total(
    s_f: torch.Tensor,
    s_g: torch.Tensor,
    t_g: torch.Tensor,
    idx: torch.Tensor,
    sigma: float = 1.0,
    delta: float = 1.0,
    topk: int = 10,
    student_norm: bool = False,
) -> dict:
    """STML objective: (RC(s_f) + RC(s_g)) / 2 + KL(g -> f); no other weights."""
    rc_f = stml_rc_loss(s_f, t_g, idx, sigma, delta, topk, student_norm)
    rc_g = stml_rc_loss(s_g, t_g, idx, sigma, delta, topk, student_norm)
    rc = (rc_f + rc_g) / 2
    kl = stml_kl_loss(s_g, s_f, student_norm)
    return {"RC": rc, "RC_f": rc_f, "RC_g": rc_g, "KL": kl, "loss": rc + kl}


def _batch(seed: int, b: int = 7, views: int = 2, d_s: int = 12, d_t: int = 16, repeat: bool = True):
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(b).repeat(views)
    if repeat:  # one crop drawn twice (a neighbour of two queries): its four rows share an id
        idx[3], idx[3 + b] = idx[1], idx[1 + b]
    s = torch.randn(views * b, d_s, generator=g, dtype=torch.float64)
    t = torch.randn(views * b, d_t, generator=g, dtype=torch.float64)
    return s, t, idx


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("topk", [4, 6, 10])
def test_teacher_weights_equal_stml(seed, topk):
    _, t, idx = _batch(seed)
    ours = teacher_weights(t, 3.0, topk, idx[:, None] == idx[None, :])
    torch.testing.assert_close(ours, stml_target_weights(t, idx, 3.0, topk), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("student_norm", [False, True])
def test_relaxed_contrastive_and_self_distillation_equal_stml(seed, student_norm):
    s_f, t, idx = _batch(seed)
    s_g = torch.randn(len(s_f), 20, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    w = teacher_weights(t, 3.0, 10, idx[:, None] == idx[None, :])
    for ours_fn, ref_fn in (
        (
            lambda x: relaxed_contrastive_on_distances(embedding_distances(x, normalize=student_norm), w, 1.0),
            lambda x: stml_rc_loss(x, t, idx, 3.0, 1.0, 10, student_norm),
        ),
    ):
        for x in (s_f, s_g):
            a = x.clone().requires_grad_(True)
            b = x.clone().requires_grad_(True)
            ours, ref = ours_fn(a), ref_fn(b)
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-8)
            (ga,) = torch.autograd.grad(ours, a)
            (gb,) = torch.autograd.grad(ref, b)
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-8)
    f = s_f.clone().requires_grad_(True)
    f_ref = s_f.clone().requires_grad_(True)
    ours = self_distillation_on_distances(
        embedding_distances(s_g, normalize=student_norm), embedding_distances(f, normalize=student_norm)
    )
    ref = stml_kl_loss(s_g, f_ref, student_norm)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(
        torch.autograd.grad(ours, f)[0], torch.autograd.grad(ref, f_ref)[0], rtol=1e-5, atol=1e-8
    )


def test_padded_sets_equal_one_set_at_a_time():
    """Sets of different sizes padded to one batch give each set's own STML values."""
    sets = [_batch(s, b=b) for s, b in ((0, 7), (1, 5), (2, 4))]
    n = max(len(s) for s, _, _ in sets)
    valid = torch.zeros(len(sets), n, dtype=torch.bool)
    s_pad = torch.zeros(len(sets), n, 12, dtype=torch.float64)
    t_pad = torch.zeros(len(sets), n, 16, dtype=torch.float64)
    ids = torch.full((len(sets), n), -1, dtype=torch.long)
    for i, (s, t, idx) in enumerate(sets):
        valid[i, : len(s)] = True
        s_pad[i, : len(s)], t_pad[i, : len(s)], ids[i, : len(s)] = s, t, idx
        s_pad[i, len(s) :], t_pad[i, len(s) :] = s[0], t[0]  # padding repeats a real row, as ugcml_terms does
        ids[i, len(s) :] = -1 - torch.arange(n - len(s))
    w = teacher_weights(t_pad, 3.0, 6, ids[:, :, None] == ids[:, None, :], valid)
    d = embedding_distances(s_pad, valid)
    rc = relaxed_contrastive_on_distances(d, w, 1.0, valid)
    kl = self_distillation_on_distances(d, d * 1.5, valid)  # any two sets of distances
    for i, (s, t, idx) in enumerate(sets):
        m = len(s)
        torch.testing.assert_close(w[i, :m, :m], stml_target_weights(t, idx, 3.0, 6), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rc[i], stml_rc_loss(s, t, idx, 3.0, 1.0, 6), rtol=1e-5, atol=1e-8)
        d_i = embedding_distances(s)
        torch.testing.assert_close(kl[i], self_distillation_on_distances(d_i, d_i * 1.5), rtol=1e-5, atol=1e-8)


def test_one_group_ugcml_terms_is_stml_loss():
    """The ms_ugcml step with one head and group_reduction mean is STML's loss, values and gradients."""
    torch.manual_seed(0)
    b, feat_dim = 6, 24
    cfg = TrainParams(teacher_dim=16, embed_dim=12, neighbours=3, mix_share=0.0)
    head = EmbeddingHead(feat_dim, cfg.teacher_dim, cfg.embed_dim).double()
    feat = torch.randn(2 * b, feat_dim, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2 * b, cfg.teacher_dim, dtype=torch.float64)
    crop_ids = torch.tensor([5, 9, 5, 2, 7, 11])  # crop 5 drawn twice
    terms = ugcml_terms(
        nn.ModuleList([head]),
        feat,
        teacher,
        torch.zeros(b, dtype=torch.long),
        cfg,
        None,
        torch.Generator().manual_seed(0),
        crop_ids=crop_ids,
    )
    (g_ours,) = torch.autograd.grad(terms["loss"], feat)
    feat_ref = feat.detach().clone().requires_grad_(True)
    s_g, s_f = head(feat_ref)
    ref = stml_total(s_f, s_g, teacher, crop_ids.repeat(2), sigma=cfg.sigma, delta=cfg.delta, topk=3 * 2)
    torch.testing.assert_close(terms["loss"], ref["loss"], rtol=1e-5, atol=1e-8)
    (g_ref,) = torch.autograd.grad(ref["loss"], feat_ref)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-8)
