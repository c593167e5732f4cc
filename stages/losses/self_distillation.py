"""Self-distillation between the two student embeddings of a head (paper eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.losses.distances import pair_mask, relative_distance


def self_distillation(teacher_emb: torch.Tensor, student_emb: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(1/n) sum_i KL(P_h_i || P_l_i), P = row softmax of -d over j != i  (eq. 3).

    Embeddings [..., n, d]; ``valid`` [..., n] marks the real rows of padded sets (one loss per
    set). As in STML's code, the higher-dimensional h embedding teaches l and is detached; eq. 3
    as printed writes the KL the other way round (see docs).
    """
    cols, pairs = pair_mask(teacher_emb.shape[-2], valid, teacher_emb.device)
    d_h = relative_distance(F.normalize(teacher_emb.detach(), dim=-1), valid)
    d_l = relative_distance(F.normalize(student_emb, dim=-1), valid)
    log_p = F.log_softmax((-d_h).masked_fill(~cols, float("-inf")), dim=-1)
    log_q = F.log_softmax((-d_l).masked_fill(~cols, float("-inf")), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(~pairs, 0.0)
    if valid is None:
        return kl.sum((-2, -1)) / max(1, teacher_emb.shape[-2])
    return kl.sum((-2, -1)) / valid.sum(-1).clamp_min(1).to(kl.dtype)
