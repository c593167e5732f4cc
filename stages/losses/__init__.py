"""Loss terms of STML and MS-UGCML, one per module, as pure functions of embeddings."""

from stages.losses.collaborative_distillation import ckd_pair, collaborative_distillation
from stages.losses.distances import embedding_distances
from stages.losses.ntxent import anchor_nt_xent, nt_xent
from stages.losses.relaxed_contrastive import relaxed_contrastive, relaxed_contrastive_on_distances
from stages.losses.self_distillation import self_distillation, self_distillation_on_distances
from stages.losses.teacher_weights import teacher_weights, view_positives

__all__ = [
    "anchor_nt_xent",
    "ckd_pair",
    "collaborative_distillation",
    "embedding_distances",
    "nt_xent",
    "relaxed_contrastive",
    "relaxed_contrastive_on_distances",
    "self_distillation",
    "self_distillation_on_distances",
    "teacher_weights",
    "view_positives",
]
