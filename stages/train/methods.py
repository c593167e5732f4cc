"""Training methods as small strategy objects: what a step samples, feeds the backbone and
minimises. The engine (:mod:`stages.train.loop`) owns the models, the optimiser, devices and
processes; a new method is a new subclass of :class:`Method` registered in :data:`METHODS`.
"""

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import torch
from torch import nn

from stages.config import TrainParams
from stages.errors import InputError
from stages.losses import (
    anchor_nt_xent,
    collaborative_distillation,
    embedding_distances,
    nt_xent,
    relaxed_contrastive_on_distances,
    self_distillation_on_distances,
    teacher_weights,
)
from stages.samplers import KnnBatchSampler
from stages.train.augment import random_resized_views
from stages.vectors.rows import ArrayRows

N_VIEWS = 2
LOSS_TERMS = ["loss", "rc_h", "rc_l", "self_distill", "ckd"]


class Method:
    """One training method. Per step the engine calls :meth:`before_step`, :meth:`batch` (global
    crop indices, identical on every rank), :meth:`inputs` (this rank's rows to feed the backbone,
    ``blocks`` row blocks of its crops) and :meth:`loss` on the gathered global features."""

    needs_teacher = False  # an EMA teacher is built, run and updated only when a method uses it
    blocks = N_VIEWS  # row blocks per crop fed to the backbone (views, then anything else)

    def __init__(self, cfg: TrainParams, group_of: np.ndarray, n_groups: int, seed: int):
        self.cfg = cfg
        self.n_crops = len(group_of)
        self.batch_size = cfg.queries * cfg.neighbours

    def before_step(self, step: int, embed_all, runtime) -> None:
        """Hook run at the start of each period of steps (every ``knn_refresh`` steps, and where a
        resumed run starts), before that period's batches are drawn (e.g. refresh a neighbour
        graph); ``embed_all(rows=None)`` returns the h and l of the training crops ``rows`` (all
        by default) on every rank, as row stores (:class:`stages.train.data.EmbeddingStore`)."""

    def batch(self) -> np.ndarray:
        raise NotImplementedError

    def inputs(self, x: torch.Tensor, generator: torch.Generator, rows: tuple[int, int]) -> torch.Tensor:
        """Backbone input of this rank's crops ``x`` (float [b, 3, S, S], rows ``rows`` of the
        global batch): the two augmented views, drawn for the whole global batch."""
        cfg = self.cfg
        return random_resized_views(
            x, N_VIEWS, cfg.aug_scale, generator, cfg.input_size, rows=rows, batch=self.batch_size
        )

    def loss(
        self,
        heads: nn.ModuleList,
        feat: torch.Tensor,
        teacher_feat: torch.Tensor | None,
        idx: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _terms(loss: torch.Tensor, **parts: torch.Tensor) -> dict[str, torch.Tensor]:
    zero = loss.new_zeros(())
    return {k: parts.get(k, zero) for k in LOSS_TERMS} | {"loss": loss}


class NtXent(Method):
    """Learn-and-Search style baseline: random crops, NT-Xent on l of the single head, either
    between the two views of a crop (``views``) or classifying each view against the batch's
    un-augmented crops (``anchor``)."""

    def __init__(self, cfg, group_of, n_groups, seed):
        super().__init__(cfg, group_of, n_groups, seed)
        self.rng = np.random.default_rng(seed)
        if cfg.ntxent_variant == "anchor":
            self.blocks = N_VIEWS + 1

    def batch(self) -> np.ndarray:
        return self.rng.choice(self.n_crops, self.batch_size, replace=self.n_crops < self.batch_size)

    def inputs(self, x, generator, rows):
        views = super().inputs(x, generator, rows)
        if self.cfg.ntxent_variant == "views":
            return views
        return torch.cat([views, x])  # the anchor: the crop itself (already input_size)

    def loss(self, heads, feat, teacher_feat, idx, generator):
        (head,) = heads
        l = head.l(feat)
        if self.cfg.ntxent_variant == "views":
            return _terms(nt_xent(l, N_VIEWS, self.cfg.ntxent_tau))
        n = N_VIEWS * len(idx)
        return _terms(anchor_nt_xent(l[:n], l[n:], self.cfg.ntxent_tau))

    def state_dict(self) -> dict:
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])


class RelaxedContrastive(Method):
    """STML and MS-UGCML: k-NN batches, relaxed contrastive + self-distillation per scale-group
    head on its mixed-scale set, collaborative distillation between heads (more than one)."""

    needs_teacher = True

    def __init__(self, cfg, group_of, n_groups, seed):
        super().__init__(cfg, group_of, n_groups, seed)
        self.seed = seed
        self.n_groups = n_groups
        self.groups = torch.from_numpy(np.asarray(group_of, dtype=np.int64))
        self.sampler = KnnBatchSampler(
            group_of, n_groups, cfg.queries, cfg.neighbours, seed, exact_max=cfg.knn_exact_max, nprobe=cfg.knn_nprobe
        )
        self.centroids: torch.Tensor | None = None

    def before_step(self, step, embed_all, runtime):
        if step % self.cfg.knn_refresh and self.sampler.neighbours is not None:
            return
        rows = self.sampler.refresh_rows(self.cfg.refresh_share, self.seed + step)  # None: every crop
        emb = embed_all(rows)
        graph = None
        if runtime.is_main:  # one graph and one set of centroids, shared by every rank
            self.sampler.refresh(emb.h, rows)
            centroids = kmeans_centroids(emb.l, self.cfg.clusters, self.seed + step) if self.n_groups > 1 else None
            graph = (self.sampler.neighbours, self.sampler.active, centroids)
        self.sampler.neighbours, self.sampler.active, centroids = runtime.broadcast(graph)
        self.centroids = None if centroids is None else centroids.to(runtime.device)

    def batch(self) -> np.ndarray:
        return self.sampler.sample()

    def loss(self, heads, feat, teacher_feat, idx, generator):
        return ugcml_terms(heads, feat, teacher_feat, self.groups[idx], self.cfg, self.centroids, generator)

    def state_dict(self) -> dict:
        nb = self.sampler.neighbours
        return {
            "rng": json.dumps(self.sampler.rng.bit_generator.state),
            "neighbours": None if nb is None else torch.from_numpy(nb),
            "active": None if self.sampler.active is None else [torch.from_numpy(a) for a in self.sampler.active],
            "centroids": None if self.centroids is None else self.centroids.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.sampler.rng.bit_generator.state = json.loads(state["rng"])
        self.sampler.neighbours = None if state["neighbours"] is None else state["neighbours"].numpy()
        active = state.get("active")
        self.sampler.active = None if active is None else [a.numpy() for a in active]
        self.centroids = state["centroids"]


METHODS: dict[str, type[Method]] = {"ms_ugcml": RelaxedContrastive, "stml": RelaxedContrastive, "ntxent": NtXent}


def build_method(cfg: TrainParams, group_of: np.ndarray, n_groups: int, seed: int) -> Method:
    if cfg.method not in METHODS:
        raise InputError(f"train.method {cfg.method!r} does not train (choose one of {sorted(METHODS)})")
    return METHODS[cfg.method](cfg, group_of, n_groups, seed)


def mixed_scale_sets(
    batch_group: torch.Tensor, n_groups: int, share: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Crop rows of each group's training set: its own crops plus ``share`` of each smaller group's.

    Group m trains on its k-NN crops and on a random ceil(share * n_j) crops of every group j < m
    (the mixed-scale set; following the authors' code, larger-object heads also see smaller ones).
    """
    own = [torch.nonzero(batch_group == m).flatten() for m in range(n_groups)]
    sets = []
    for m in range(n_groups):
        parts = [own[m]]
        for j in range(m):
            n = math.ceil(share * len(own[j])) if share > 0 else 0
            if n:
                parts.append(own[j][torch.randperm(len(own[j]), generator=generator)[:n]])
        sets.append(torch.cat(parts))
    return sets


def kmeans_centroids(emb, k: int, seed: int, points_per_centroid: int = 256) -> torch.Tensor:
    """FAISS k-means of L2-normalised embeddings (k capped by the number of points); ``emb`` is an
    [n, d] array or a row store (:mod:`stages.vectors.rows`). FAISS trains on at most
    ``points_per_centroid * k`` points: above that a seeded sample of rows is read, never all."""
    store = ArrayRows(emb) if isinstance(emb, np.ndarray) else emb
    n = len(store)
    k = max(2, min(k, n // 2))
    cap = points_per_centroid * k
    rows = np.arange(n) if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
    x = store.take(rows)
    faiss.normalize_L2(x)
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    return torch.from_numpy(km.centroids.copy())


def ugcml_terms(
    heads: nn.ModuleList,
    feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    batch_group: torch.Tensor,
    cfg: TrainParams,
    centroids: torch.Tensor | None,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """MS-UGCML loss of one batch from the student's backbone features and the teacher's
    embeddings of the views (both stacked [2B, .]); ``batch_group`` [B] on the CPU.

    Per group m, on its mixed-scale set: L_con(h_m) + L_con(l_m) (eq. 4) + L_self(h_m, l_m) (eq. 3);
    plus L_CKD over the group pairs on their shared crops (eq. 1-2). With one group this is STML.
    Each head embeds only the views of its own set; the losses of all sets are then computed at
    once on the sets padded to the largest (a few large ops instead of many tiny ones per group).
    """
    dev = feat.device
    sets = mixed_scale_sets(batch_group, len(heads), cfg.mix_share, generator)
    sizes = torch.tensor([len(s) for s in sets])
    rows = torch.cat([torch.cat([s, s + len(batch_group)]) for s in sets]).to(dev)  # views of each set, set after set
    start = (2 * sizes).cumsum(0) - 2 * sizes  # first row of each set in ``rows``
    outs = [head(f) for head, f in zip(heads, feat[rows].split((2 * sizes).tolist()))]  # one gather for all heads
    h_all, l_all = torch.cat([h for h, _ in outs]), torch.cat([l for _, l in outs])
    zero = feat.new_zeros(())
    terms = {"rc_h": zero, "rc_l": zero, "self_distill": zero, "ckd": zero}
    active = torch.nonzero(sizes >= 2).flatten()  # sets of fewer than 2 crops have no pairs to learn from
    if len(active):
        n = sizes[active][:, None]
        pos = torch.arange(2 * int(n.max()))[None, :]
        valid = pos < 2 * n  # [A, N]: position p < 2n is view p // n of the set's crop p % n
        idx = (start[active][:, None] + torch.where(valid, pos, 0)).to(dev)  # padding repeats the set's first row
        crop = torch.where(valid, pos % n, -1 - pos).to(dev)  # padding: ids no other position has
        valid = valid.to(dev)
        h, l = h_all[idx], l_all[idx]
        w = teacher_weights(
            teacher_feat[rows[idx]], cfg.sigma, cfg.context_k, crop[:, :, None] == crop[:, None, :], valid
        )
        d_h, d_l = embedding_distances(h, valid), embedding_distances(l, valid)  # each once, for eq. 3 and eq. 4
        terms["rc_h"] = relaxed_contrastive_on_distances(d_h, w, cfg.delta, valid).sum()  # eq. 4 on h_m
        terms["rc_l"] = relaxed_contrastive_on_distances(d_l, w, cfg.delta, valid).sum()  # eq. 4 on l_m
        terms["self_distill"] = self_distillation_on_distances(d_h, d_l, valid).sum()  # eq. 3
    if centroids is not None and len(sets) > 1:
        terms["ckd"] = collaborative_distillation(
            l_all, *_shared_rows(sets, sizes, start, len(batch_group), dev), centroids, cfg.ckd_tau
        )  # eq. 2
    terms["loss"] = terms["rc_h"] + terms["rc_l"] + terms["self_distill"] + terms["ckd"]
    return terms


def _shared_rows(
    sets: list[torch.Tensor], sizes: torch.Tensor, start: torch.Tensor, n_crops: int, dev
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """For every group pair (a, b), a < b, and every crop in both sets, both views' rows in the
    stacked head outputs (set after set from row ``start``, each [view 1 of its ``sizes`` crops;
    view 2]): (rows_a, rows_b, pair, n_pairs) as :func:`collaborative_distillation` takes them."""
    g = len(sets)
    where = torch.full((g, n_crops), -1, dtype=torch.long)  # position of each crop in each set
    for m, s in enumerate(sets):
        where[m, s] = torch.arange(len(s))
    a, b = torch.triu_indices(g, g, 1)
    pair, crop = torch.nonzero((where[a] >= 0) & (where[b] >= 0), as_tuple=True)
    a, b = a[pair], b[pair]
    rows_a, rows_b = start[a] + where[a, crop], start[b] + where[b, crop]  # view 1; view 2 is n rows on
    rows_a, rows_b = torch.cat([rows_a, rows_a + sizes[a]]), torch.cat([rows_b, rows_b + sizes[b]])
    return rows_a.to(dev), rows_b.to(dev), torch.cat([pair, pair]).to(dev), g * (g - 1) // 2
