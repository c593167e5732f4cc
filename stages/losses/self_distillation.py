"""Self-distillation between the two student embeddings of a head (paper eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.losses.distances import embedding_distances


def self_distillation(
    teacher_emb: torch.Tensor, student_emb: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """(1/n) sum_i KL(P_h_i || P_l_i), P = row softmax of -d over every j, i included  (eq. 3, STML's code).

    Embeddings [..., n, d]; ``valid`` [..., n] marks the real rows of padded sets (one loss per
    set). As in STML's code, the higher-dimensional h embedding teaches l and is detached; eq. 3
    as printed writes the KL the other way round (see docs).
    """
    return self_distillation_on_distances(
        embedding_distances(teacher_emb, valid), embedding_distances(student_emb, valid), valid
    )


def self_distillation_on_distances(
    d_teacher: torch.Tensor, d_student: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`self_distillation` from the two embeddings' distances (:func:`embedding_distances`);
    no gradient reaches ``d_teacher``."""
    n = d_teacher.shape[-1]
    if valid is None:
        log_p = F.log_softmax(-d_teacher.detach(), dim=-1)
        log_q = F.log_softmax(-d_student, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum((-2, -1)) / max(1, n)
    cols = valid[..., None, :].expand(*valid.shape, n)  # the diagonal is one of the columns, as in STML
    pairs = cols & valid[..., :, None]
    log_p = F.log_softmax((-d_teacher.detach()).masked_fill(~cols, float("-inf")), dim=-1)
    log_q = F.log_softmax((-d_student).masked_fill(~cols, float("-inf")), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(~pairs, 0.0)
    return kl.sum((-2, -1)) / valid.sum(-1).clamp_min(1).to(kl.dtype)
