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
    diagnostics: list[str] = []  # values logged per step besides LOSS_TERMS (terms["diagnostics"])

    def __init__(
        self, cfg: TrainParams, group_of: np.ndarray, n_groups: int, seed: int, group_area: np.ndarray | None = None
    ):
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
            x,
            N_VIEWS,
            cfg.aug_scale,
            generator,
            cfg.input_size,
            rows=rows,
            batch=self.batch_size,
            colour=cfg.aug_colour,
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

    def __init__(self, cfg, group_of, n_groups, seed, group_area=None):
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

    def __init__(self, cfg, group_of, n_groups, seed, group_area=None):
        super().__init__(cfg, group_of, n_groups, seed)
        self.seed = seed
        self.n_groups = n_groups
        self.groups = torch.from_numpy(np.asarray(group_of, dtype=np.int64))
        area = group_area if cfg.quota == "size_area" else None
        self.sampler = KnnBatchSampler(
            group_of,
            n_groups,
            cfg.queries,
            cfg.neighbours,
            seed,
            group_area=area,
            exact_max=cfg.knn_exact_max,
            nprobe=cfg.knn_nprobe,
            rerank=cfg.knn_rerank,
            scope=cfg.knn_scope,
        )
        self.centroids: torch.Tensor | None = None
        self.diagnostics = group_diagnostics(n_groups)

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
        # each crop trains the head of its query's group (the query leads its k-NN cluster): its own
        # group with knn_scope: group, any group's crop with knn_scope: all
        k = self.cfg.neighbours
        batch_group = self.groups[idx.view(-1, k)[:, 0]].repeat_interleave(k)
        return ugcml_terms(heads, feat, teacher_feat, batch_group, self.cfg, self.centroids, generator, crop_ids=idx)

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


def build_method(
    cfg: TrainParams, group_of: np.ndarray, n_groups: int, seed: int, group_area: np.ndarray | None = None
) -> Method:
    """The method of ``cfg.method``; ``group_area`` [n_groups]: mean box area per group (``quota``)."""
    if cfg.method not in METHODS:
        raise InputError(f"train.method {cfg.method!r} does not train (choose one of {sorted(METHODS)})")
    return METHODS[cfg.method](cfg, group_of, n_groups, seed, group_area)


def mixed_scale_sets(
    batch_group: torch.Tensor, n_groups: int, share: float, generator: torch.Generator, from_all: bool = False
) -> list[torch.Tensor]:
    """Crop rows of each group's training set: its own crops plus ``share`` of each smaller group's.

    Group m trains on its k-NN crops and on a random ceil(share * n_j) crops of every group j < m
    (the mixed-scale set; following the authors' code, larger-object heads also see smaller ones),
    or of every group j != m with ``from_all``.
    """
    own = [torch.nonzero(batch_group == m).flatten() for m in range(n_groups)]
    sets = []
    for m in range(n_groups):
        parts = [own[m]]
        others = [j for j in range(n_groups) if j != m] if from_all else range(m)
        for j in others:
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


def group_diagnostics(n_groups: int) -> list[str]:
    """The per-group and per-pair values a ms_ugcml step logs besides :data:`LOSS_TERMS`."""
    cols = []
    for m in range(1, n_groups + 1):
        cols += [f"rc_h_g{m}", f"rc_l_g{m}", f"self_distill_g{m}", f"set_g{m}"]
    for a, b in zip(*torch.triu_indices(n_groups, n_groups, 1).tolist()):
        cols += [f"ckd_g{a + 1}g{b + 1}", f"ckd_rows_g{a + 1}g{b + 1}"]
    return cols


def ugcml_terms(
    heads: nn.ModuleList,
    feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    batch_group: torch.Tensor,
    cfg: TrainParams,
    centroids: torch.Tensor | None,
    generator: torch.Generator,
    crop_ids: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """MS-UGCML loss of one batch from the student's backbone features and the teacher's
    embeddings of the views (both stacked [2B, .]; the teacher's [2B, G_t * d_t] holds one block
    per teacher head); ``batch_group`` [B] on the CPU; ``crop_ids`` [B] the dataset ids of the
    batch's crops (rows of one crop rank first in each other's neighbour lists, as in STML).

    Per group m, on its mixed-scale set, with the soft labels of teacher head m (or the shared
    one): RC_m = (L_con(h_m) + L_con(l_m)) / 2 (eq. 4) and L_self(h_m, l_m) (eq. 3); the group
    terms are averaged over the G heads (``group_reduction: mean``, the authors' code; with one
    group this is STML's (RC_f + RC_g)/2 + KL) or summed as eq. 5 prints them (``sum``); plus
    L_CKD over the group pairs (eq. 1-2) on every crop both heads embed (``ckd_rows: all``) or only
    on the crops the two mixed-scale sets share (``shared``, the authors' code). Each head embeds
    only the views of its own set for eq. 3-4; the sets' losses are computed at once on the sets
    padded to the largest.
    """
    dev = feat.device
    g = len(heads)
    n_crops = len(batch_group)
    crop_ids = torch.arange(n_crops) if crop_ids is None else crop_ids.cpu()
    sets = mixed_scale_sets(batch_group, g, cfg.mix_share, generator, cfg.mix_from == "all")
    sizes = torch.tensor([len(s) for s in sets])
    rows = torch.cat([torch.cat([s, s + n_crops]) for s in sets]).to(dev)  # views of each set, set after set
    start = (2 * sizes).cumsum(0) - 2 * sizes  # first row of each set in ``rows``
    use_ckd = centroids is not None and g > 1 and cfg.ckd_weight > 0
    every_row = cfg.ckd_rows == "all" and use_ckd
    h_all = torch.cat([head.h(f) for head, f in zip(heads, feat[rows].split((2 * sizes).tolist()))])
    if every_row:  # every head's l of every row: the sets' rows are gathered from it
        l_full = torch.stack([head.l(feat) for head in heads])  # [G, 2B, d]
        owner = torch.repeat_interleave(torch.arange(g), 2 * sizes).to(dev)
        l_all = l_full[owner, rows]
    else:
        l_all = torch.cat([head.l(f) for head, f in zip(heads, feat[rows].split((2 * sizes).tolist()))])
    zero = feat.new_zeros(())
    per_group = {k: feat.new_zeros(g) for k in ("rc_h", "rc_l", "self_distill")}
    active = torch.nonzero(sizes >= 2).flatten()  # sets of fewer than 2 crops have no pairs to learn from
    if len(active):
        n = sizes[active][:, None]
        pos = torch.arange(2 * int(n.max()))[None, :]
        valid = pos < 2 * n  # [A, N]: position p < 2n is view p // n of the set's crop p % n
        idx = start[active][:, None] + torch.where(valid, pos, 0)  # padding repeats the set's first row
        ids = torch.where(valid, crop_ids[rows.cpu()[idx] % n_crops], -1 - pos)  # padding: ids no row has
        idx, valid, ids = idx.to(dev), valid.to(dev), ids.to(dev)
        t = teacher_feat.unflatten(-1, (-1, cfg.teacher_dim))  # [2B, G_t, d_t]
        t_head = active.to(dev)[:, None] if t.shape[1] > 1 else 0  # set m: teacher head m
        w = teacher_weights(t[rows[idx], t_head], cfg.sigma, context_k(cfg), ids[:, :, None] == ids[:, None, :], valid)
        # each head output's relative distances once, for eq. 3 and eq. 4
        d_h = embedding_distances(h_all[idx], valid, cfg.student_norm)
        d_l = embedding_distances(l_all[idx], valid, cfg.student_norm)
        per_group["rc_h"][active] = relaxed_contrastive_on_distances(d_h, w, cfg.delta, valid)  # eq. 4 on h_m
        per_group["rc_l"][active] = relaxed_contrastive_on_distances(d_l, w, cfg.delta, valid)  # eq. 4 on l_m
        per_group["self_distill"][active] = self_distillation_on_distances(d_h, d_l, valid)  # eq. 3
    ckd, ckd_pairs, ckd_rows = zero, feat.new_zeros(g * (g - 1) // 2), torch.zeros(g * (g - 1) // 2)
    if use_ckd:
        if every_row:
            ckd_pairs = pairwise_ckd(l_full, centroids, cfg.ckd_tau)  # eq. 1 per pair, on all 2B rows
            ckd_rows = torch.full_like(ckd_rows, 2 * n_crops)
        else:
            rows_a, rows_b, pair, n_pairs = _shared_rows(sets, sizes, start, n_crops, dev)
            ckd_pairs = collaborative_distillation(
                l_all, rows_a, rows_b, pair, n_pairs, centroids, cfg.ckd_tau, reduce=False
            )
            ckd_rows = torch.bincount(pair.cpu(), minlength=n_pairs).float()
        ckd = ckd_pairs.mean()  # eq. 2: the mean over the group pairs
    scale = 1.0 / g if cfg.group_reduction == "mean" else 1.0
    terms = {k: v.sum() * scale for k, v in per_group.items()} | {"ckd": ckd}
    rc_weight = 0.5 if cfg.group_reduction == "mean" else 1.0  # STML: (RC_f + RC_g) / 2
    terms["loss"] = rc_weight * (terms["rc_h"] + terms["rc_l"]) + terms["self_distill"] + cfg.ckd_weight * ckd
    diag = []
    for m in range(g):
        diag += [per_group["rc_h"][m], per_group["rc_l"][m], per_group["self_distill"][m], sizes[m].to(feat)]
    for p in range(len(ckd_pairs)):
        diag += [ckd_pairs[p], ckd_rows[p].to(feat)]
    terms["diagnostics"] = torch.stack(diag).detach() if diag else feat.new_zeros(0)
    return terms


def context_k(cfg: TrainParams) -> int:
    """k of STML's contextual similarity: ``train.context_k``, else neighbours x views (STML's topk)."""
    return cfg.context_k if cfg.context_k is not None else cfg.neighbours * N_VIEWS


def pairwise_ckd(l_full: torch.Tensor, centroids: torch.Tensor, tau: float) -> torch.Tensor:
    """L_CKD(G_a, G_b) (eq. 1) of every head pair a < b, each over all rows both heads embed [G, R, d]."""
    g, r, _ = l_full.shape
    a, b = torch.triu_indices(g, g, 1, device=l_full.device)
    rows = torch.arange(r, device=l_full.device)
    flat = l_full.reshape(g * r, -1)
    rows_a = (a[:, None] * r + rows[None, :]).flatten()
    rows_b = (b[:, None] * r + rows[None, :]).flatten()
    pair = torch.arange(len(a), device=l_full.device).repeat_interleave(r)
    return collaborative_distillation(flat, rows_a, rows_b, pair, len(a), centroids, tau, reduce=False)


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
