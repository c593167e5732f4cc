"""Student (backbone + one head per scale group) and its EMA teacher: what train builds, index embeds with."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from stages.backbones import BackboneOptionsLike, build_from_options

EMBED_HEADS = ("first", "mean", "routed")


class EmbeddingHead(nn.Module):
    """The two embedding layers of one student head: h (teaches, feeds the EMA) and l (retrieval)."""

    def __init__(self, in_dim: int, teacher_dim: int, embed_dim: int):
        super().__init__()
        self.h = nn.Linear(in_dim, teacher_dim)
        self.l = nn.Linear(in_dim, embed_dim)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.h(feat), self.l(feat)


class StudentModel(nn.Module):
    """Backbone with ``n_heads`` embedding heads; ``n_heads = 0`` embeds with the pooled feature."""

    def __init__(
        self,
        backbone: nn.Module,
        n_heads: int,
        teacher_dim: int,
        embed_dim: int,
        input_size: int,
        embed_head: str = "mean",
        head_init: str = "orthogonal",
        group_boundaries: list[float] | None = None,
    ):
        super().__init__()
        if embed_head not in EMBED_HEADS:
            raise ValueError(f"embed_head must be one of {EMBED_HEADS}, got {embed_head!r}")
        self.backbone = backbone
        dim = backbone.spec.feature_dim
        if head_init not in ("orthogonal", "shared"):
            raise ValueError(f"head_init must be 'orthogonal' or 'shared', got {head_init!r}")
        if head_init == "orthogonal":  # STML and the authors: orthogonal weights, zero bias, drawn per head
            self.heads = nn.ModuleList(_orthogonal(EmbeddingHead(dim, teacher_dim, embed_dim)) for _ in range(n_heads))
        else:  # one default initialisation copied to every head: the heads agree at step 0 (CKD = 0)
            first = EmbeddingHead(dim, teacher_dim, embed_dim)
            self.heads = nn.ModuleList(copy.deepcopy(first) for _ in range(n_heads))
        self.input_size = input_size
        self.embed_head = embed_head
        # the k-1 inner box-area boundaries of the scale groups (stages.groups.quantiles), for "routed"
        self.group_boundaries = torch.as_tensor(group_boundaries or [], dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        feat = self.backbone(x)
        return [head(feat) for head in self.heads]

    def train_mode(self, freeze_bn: bool) -> "StudentModel":
        """Training mode; with ``freeze_bn`` BatchNorm layers keep their running statistics."""
        self.train()
        if freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    @property
    def routed(self) -> bool:
        """Whether each crop is embedded by the head of its own scale group (needs its box area)."""
        return self.embed_head == "routed" and len(self.heads) > 1

    def scale_group(self, areas: torch.Tensor) -> torch.Tensor:
        """Scale group of each box area, as the groups stage assigns training objects (its boundaries)."""
        if len(self.group_boundaries) != len(self.heads) - 1:
            raise ValueError(f"{len(self.heads)} heads need {len(self.heads) - 1} group boundaries to route")
        areas = torch.as_tensor(areas, dtype=torch.float64).reshape(-1)
        return torch.searchsorted(self.group_boundaries, areas, right=True)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, areas: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieval embedding: L2-normalised l of the first head, the mean of the normalised l of
        all heads, or the l of the head of each crop's scale group (``embed_head``: first, mean,
        routed; routing reads ``areas``, the box area of each crop in its image's pixels); the
        pooled backbone feature when there is no head."""
        if self.routed:
            if areas is None:
                raise ValueError("a routed embedding needs the box area of each crop")
            return F.normalize(self.embed_by_group(x, self.scale_group(areas).to(x.device))[1], dim=1)
        feat = self.backbone(x)
        if not len(self.heads):
            return F.normalize(feat, dim=1)
        if self.embed_head == "first":
            return F.normalize(self.heads[0].l(feat), dim=1)
        return F.normalize(torch.stack([F.normalize(h.l(feat), dim=1) for h in self.heads]).mean(0), dim=1)

    @torch.no_grad()
    def embed_by_group(self, x: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, l) of each crop from the head of its own scale group: one backbone pass, and each
        crop through one head only."""
        feat = self.backbone(x)
        h = feat.new_empty(len(x), self.heads[0].h.out_features)
        l = feat.new_empty(len(x), self.heads[0].l.out_features)
        for m, head in enumerate(self.heads):  # a handful of heads
            rows = torch.nonzero(group == m).flatten()
            if len(rows):
                h[rows], l[rows] = head(feat[rows])
        return h, l


def _orthogonal(head: EmbeddingHead) -> EmbeddingHead:
    for layer in (head.h, head.l):
        nn.init.orthogonal_(layer.weight)
        nn.init.zeros_(layer.bias)
    return head


class TeacherModel(nn.Module):
    """EMA of the student: its backbone and either one head per group, head m the EMA of student
    head m's h (``per_group``, the authors' code), or one head h^t following the mean of the h
    layers (``shared``). Each teacher head starts as a copy of its student head."""

    def __init__(self, student: StudentModel, heads: str = "per_group"):
        super().__init__()
        if heads not in ("per_group", "shared"):
            raise ValueError(f"teacher heads must be 'per_group' or 'shared', got {heads!r}")
        self.per_group = heads == "per_group" and len(student.heads) > 1
        self.backbone = copy.deepcopy(student.backbone)
        sources = student.heads if self.per_group else student.heads[:1]
        self.heads = nn.ModuleList(copy.deepcopy(hd.h) for hd in sources)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, G_t * d_t]: every teacher head's embedding of every row, head after head."""
        feat = self.backbone(x)
        return torch.cat([head(feat) for head in self.heads], dim=1)

    @torch.no_grad()
    def ema_update(self, student: StudentModel, momentum: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s, over parameters and float buffers (BN stats);
        the head's theta_s is the mean of the student heads' h layers (h_1 alone for one head)."""
        t_state = list(self.backbone.parameters()) + [b for b in self.backbone.buffers() if b.is_floating_point()]
        s_state = list(student.backbone.parameters()) + [b for b in student.backbone.buffers() if b.is_floating_point()]
        heads = [[hd.h.weight, hd.h.bias] for hd in student.heads]
        if self.per_group or len(heads) == 1:  # teacher head m follows student head m
            t_heads = [p for head in self.heads for p in (head.weight, head.bias)]
            s_heads = [p for h in heads[: len(self.heads)] for p in h]
            torch._foreach_lerp_(t_state + t_heads, s_state + s_heads, 1.0 - momentum)
            return
        torch._foreach_lerp_(t_state, s_state, 1.0 - momentum)
        # m theta_t + (1 - m) mean_i h_i, accumulated head by head (no stacked copy of the heads)
        t_head = [self.heads[0].weight, self.heads[0].bias]
        torch._foreach_mul_(t_head, momentum)
        for h in heads:
            torch._foreach_add_(t_head, h, alpha=(1.0 - momentum) / len(heads))


def build_student(
    backbone: str,
    n_heads: int,
    teacher_dim: int,
    embed_dim: int,
    input_size: int,
    pretrained: bool = True,
    embed_head: str = "mean",
    options: BackboneOptionsLike | None = None,
    head_init: str = "orthogonal",
    group_boundaries: list[float] | None = None,
) -> StudentModel:
    """A student over ``backbone`` built as ``options`` say (weights file, init); ``pretrained=False``
    builds the same architecture without reading weights (to load a trained state dict)."""
    net = build_from_options(backbone, options, pretrained=pretrained)
    return StudentModel(net, n_heads, teacher_dim, embed_dim, input_size, embed_head, head_init, group_boundaries)
