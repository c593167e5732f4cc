"""Self-distillation between the two student embeddings of a head (paper eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.losses.distances import relative_distance


def _log_softmax_off_diagonal(d: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(d), dtype=torch.bool, device=d.device)
    return F.log_softmax((-d).masked_fill(eye, float("-inf")), dim=1)


def self_distillation(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> torch.Tensor:
    """(1/n) sum_i KL(P_h_i || P_l_i), P = row softmax of -d over j != i  (eq. 3).

    As in STML's code, the higher-dimensional h embedding teaches l and is detached; eq. 3 as
    printed writes the KL the other way round (see docs).
    """
    d_h = relative_distance(F.normalize(teacher_emb.detach(), dim=1))
    d_l = relative_distance(F.normalize(student_emb, dim=1))
    log_p = _log_softmax_off_diagonal(d_h)
    log_q = _log_softmax_off_diagonal(d_l)
    eye = torch.eye(len(d_h), dtype=torch.bool, device=d_h.device)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(eye, 0.0)
    return kl.sum() / max(1, len(d_h))
