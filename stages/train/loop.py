"""The teacher–student training loop (MS-UGCML, STML) and the NT-Xent baseline.

Resumable: every ``checkpoint_every`` steps the student, teacher, optimiser, scheduler,
sampler and RNG states are written atomically; a restarted run with the same fingerprint
continues from there and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from adamp import AdamP
from tqdm import tqdm

from stages.backbones import DEFAULT_BACKBONE
from stages.config import TrainParams
from stages.losses import (
    collaborative_distillation,
    nt_xent,
    relaxed_contrastive,
    self_distillation,
    teacher_weights,
    view_positives,
)
from stages.samplers import KnnBatchSampler
from stages.train.augment import random_resized_views
from stages.train.model import StudentModel, TeacherModel, build_student

log = logging.getLogger(__name__)
N_VIEWS = 2
LOG_COLUMNS = ["step", "lr", "loss", "rc_h", "rc_l", "self_distill", "ckd"]


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr: linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mixed_scale_sets(batch_group: torch.Tensor, n_groups: int, share: float, generator: torch.Generator) -> list[torch.Tensor]:
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


def ugcml_loss(
    student: StudentModel,
    teacher: TeacherModel,
    views: torch.Tensor,
    batch_group: torch.Tensor,
    cfg: TrainParams,
    centroids: torch.Tensor | None,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """MS-UGCML loss of one batch; views stacked [2B, 3, S, S], ``batch_group`` [B].

    Per group m, on its mixed-scale set: L_con(h_m) + L_con(l_m) (eq. 4) + L_self(h_m, l_m) (eq. 3);
    plus L_CKD over the group pairs on their shared crops (eq. 1-2). With one group this is STML.
    """
    n_crops = len(batch_group)
    with torch.no_grad():
        t = teacher(views)
    feat = student.backbone(views)
    sets = mixed_scale_sets(batch_group, len(student.heads), cfg.mix_share, generator)
    zero = views.new_zeros(())
    terms = {"rc_h": zero, "rc_l": zero, "self_distill": zero, "ckd": zero}
    l_of_set = []  # each head embeds only the views of its own set
    for head, rows in zip(student.heads, sets):
        both = torch.cat([rows, rows + n_crops])
        h, l = head(feat[both])
        l_of_set.append(l)
        if len(rows) < 2:
            continue
        w = teacher_weights(t[both], cfg.sigma, cfg.context_k, view_positives(len(rows), N_VIEWS, views.device))
        terms["rc_h"] = terms["rc_h"] + relaxed_contrastive(h, w, cfg.delta)  # eq. 4 on h_m
        terms["rc_l"] = terms["rc_l"] + relaxed_contrastive(l, w, cfg.delta)  # eq. 4 on l_m
        terms["self_distill"] = terms["self_distill"] + self_distillation(h, l)  # eq. 3
    if centroids is not None and len(sets) > 1:
        pairs = []
        for a in range(len(sets)):
            for b in range(a + 1, len(sets)):
                shared = sets[a][torch.isin(sets[a], sets[b])]
                pairs.append((l_of_set[a][_view_rows(sets[a], shared)], l_of_set[b][_view_rows(sets[b], shared)]))
        terms["ckd"] = collaborative_distillation(pairs, centroids, cfg.ckd_tau)  # eq. 2
    terms["loss"] = terms["rc_h"] + terms["rc_l"] + terms["self_distill"] + terms["ckd"]
    return terms


def _view_rows(set_rows: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Positions, in a set's stacked views [view 1 of its rows; view 2 of its rows], of both
    views of ``crops`` (a subset of ``set_rows``)."""
    if len(crops) == 0:
        return torch.empty(0, dtype=torch.long)
    pos = torch.full((int(set_rows.max()) + 1,), -1, dtype=torch.long)
    pos[set_rows] = torch.arange(len(set_rows))
    p = pos[crops]
    return torch.cat([p, p + len(set_rows)])


def ntxent_loss(student: StudentModel, views: torch.Tensor, cfg: TrainParams) -> dict[str, torch.Tensor]:
    """The two-view NT-Xent baseline on l of the single head."""
    ((_, l),) = student(views)
    loss = nt_xent(l, N_VIEWS, cfg.ntxent_tau)
    zero = loss.new_zeros(())
    return {"loss": loss, "rc_h": zero, "rc_l": zero, "self_distill": zero, "ckd": zero}


@torch.no_grad()
def refresh_embeddings(student: StudentModel, crops: torch.Tensor, group_of: np.ndarray, batch: int, freeze_bn: bool) -> tuple[np.ndarray, np.ndarray]:
    """h and l of every training crop from its own group's head, in one backbone pass per batch."""
    student.eval()
    groups = torch.from_numpy(group_of)
    hs, ls = [], []
    starts = range(0, len(crops), batch)
    for s in tqdm(starts, desc="refresh k-NN/centroids", unit="batch", leave=False, disable=len(starts) < 2):
        h, l = student.embed_by_group(crops[s : s + batch].float().div_(255), groups[s : s + batch])
        hs.append(h.numpy())
        ls.append(l.numpy())
    student.train_mode(freeze_bn)
    return np.concatenate(hs), np.concatenate(ls)


def kmeans_centroids(emb: np.ndarray, k: int, seed: int) -> torch.Tensor:
    """FAISS k-means of L2-normalised embeddings (k capped by the number of points)."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    faiss.normalize_L2(x)
    k = max(2, min(k, len(x) // 2))
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    return torch.from_numpy(km.centroids.copy())


@dataclass
class TrainResult:
    student: StudentModel
    steps: int
    resumed_from: int


def train_model(
    cfg: TrainParams,
    crops: torch.Tensor,
    group_of: np.ndarray,
    n_groups: int,
    seed: int,
    checkpoint: Path,
    log_path: Path,
    fingerprint: str,
    stop_after: int | None = None,
    backbone: str = DEFAULT_BACKBONE,
) -> TrainResult:
    """Train ``cfg.method`` (ms_ugcml, stml, ntxent) on uint8 crops [N, 3, S, S].

    ``group_of`` [N] is each crop's scale group (ms_ugcml has one head per group; stml and ntxent
    use one group). ``stop_after`` stops early as a crash would (tests). ``backbone`` is a registry name.
    """
    if cfg.method != "ms_ugcml":
        group_of, n_groups = np.zeros(len(crops), dtype=np.int64), 1
    gen = seed_everything(seed)
    student = build_student(backbone, n_groups, cfg.teacher_dim, cfg.embed_dim, cfg.input_size, embed_head=cfg.embed_head)
    teacher = TeacherModel(student).eval()
    opt = AdamP(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    sampler = KnnBatchSampler(group_of, n_groups, cfg.queries, cfg.neighbours, seed)
    state = {"centroids": None, "history": []}
    start = _resume(checkpoint, fingerprint, student, teacher, opt, sched, sampler, gen, state)
    # The log is rewritten from the checkpoint's history: it always matches the weights.
    log_path.write_text("".join("\t".join(r) + "\n" for r in [LOG_COLUMNS, *state["history"]]))
    student.train_mode(cfg.freeze_bn)
    groups_t = torch.from_numpy(group_of)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {cfg.method}", unit="step")
    for step in bar:
        if cfg.method == "ntxent":
            idx = torch.from_numpy(sampler.rng.choice(len(crops), cfg.queries * cfg.neighbours, replace=len(crops) < cfg.queries * cfg.neighbours))
        else:
            if step % cfg.knn_refresh == 0 or sampler.neighbours is None:
                h, l = refresh_embeddings(student, crops, group_of, cfg.batch_embed, cfg.freeze_bn)
                sampler.refresh(h)
                if n_groups > 1:
                    state["centroids"] = kmeans_centroids(l, cfg.clusters, seed + step)
            idx = torch.from_numpy(sampler.sample())
        x = crops[idx].float().div_(255)
        views = random_resized_views(x, N_VIEWS, cfg.aug_scale, gen, cfg.input_size)
        if cfg.method == "ntxent":
            terms = ntxent_loss(student, views, cfg)
        else:
            terms = ugcml_loss(student, teacher, views, groups_t[idx], cfg, state["centroids"], gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        teacher.ema_update(student, cfg.ema)
        row = [str(step), f"{lr:.6g}"] + [f"{float(terms[k].detach()):.6g}" for k in LOG_COLUMNS[2:]]
        state["history"].append(row)
        with open(log_path, "a") as f:
            f.write("\t".join(row) + "\n")
        bar.set_postfix(loss=row[2], lr=f"{lr:.2e}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save(checkpoint, fingerprint, done, student, teacher, opt, sched, sampler, gen, state)
        if stop_after is not None and done >= stop_after:
            break
    return TrainResult(student.eval(), cfg.steps, start)


def _save(path: Path, fingerprint: str, step: int, student, teacher, opt, sched, sampler, gen, extra: dict) -> None:
    state = {
        "fingerprint": fingerprint,
        "step": step,
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sampler_rng": json.dumps(sampler.rng.bit_generator.state),
        "neighbours": None if sampler.neighbours is None else torch.from_numpy(sampler.neighbours),
        "torch_rng": torch.get_rng_state(),
        "generator": gen.get_state(),
        "centroids": extra["centroids"],
        "history": json.dumps(extra["history"]),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(path: Path, fingerprint: str, student, teacher, opt, sched, sampler, gen, extra: dict) -> int:
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged checkpoint is not worth a crash: start over
        log.warning("train: ignoring unreadable checkpoint %s (%s)", path, exc)
        return 0
    if state.get("fingerprint") != fingerprint:
        log.info("train: checkpoint %s belongs to other params or data; starting over", path)
        return 0
    student.load_state_dict(state["student"])
    teacher.load_state_dict(state["teacher"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
    sampler.neighbours = None if state["neighbours"] is None else state["neighbours"].numpy()
    torch.set_rng_state(state["torch_rng"])
    gen.set_state(state["generator"])
    extra["centroids"] = state["centroids"]
    extra["history"] = json.loads(state["history"])[: int(state["step"])]
    log.info("train: resuming from step %d of %s", state["step"], path)
    return int(state["step"])
