"""The STML teacher–student training loop: k-NN batches, two views, EMA teacher.

Resumable: every ``checkpoint_every`` steps the student, teacher, optimiser, scheduler,
sampler and RNG states are written atomically; a restarted run with the same fingerprint
continues from there and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from adamp import AdamP
from tqdm import tqdm

from stages.config import TrainParams
from stages.index.embed import embed_tensor
from stages.losses import relaxed_contrastive, self_distillation, teacher_weights, view_positives
from stages.samplers import KnnBatchSampler
from stages.train.augment import random_resized_views
from stages.train.model import StudentModel, TeacherModel, build_student

log = logging.getLogger(__name__)
N_VIEWS = 2
LOG_COLUMNS = ["step", "lr", "loss", "rc_h", "rc_l", "self_distill"]


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


def stml_loss(student: StudentModel, teacher: TeacherModel, views: torch.Tensor, cfg: TrainParams) -> dict[str, torch.Tensor]:
    """Loss terms of one batch of views stacked [n_views * B, 3, S, S] (STML; one head)."""
    with torch.no_grad():
        t = teacher(views)
    w = teacher_weights(t, cfg.sigma, cfg.context_k, view_positives(len(views) // N_VIEWS, N_VIEWS, views.device))
    (h, l), = student(views)
    terms = {
        "rc_h": relaxed_contrastive(h, w, cfg.delta),  # eq. 4 on h
        "rc_l": relaxed_contrastive(l, w, cfg.delta),  # eq. 4 on l
        "self_distill": self_distillation(h, l),  # eq. 3, h teaches l
    }
    terms["loss"] = sum(terms.values())
    return terms


@dataclass
class TrainResult:
    student: StudentModel
    steps: int
    resumed_from: int


def train_stml(
    cfg: TrainParams,
    crops: torch.Tensor,
    group_of: np.ndarray,
    seed: int,
    checkpoint: Path,
    log_path: Path,
    fingerprint: str,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on uint8 crops [N, 3, S, S]; ``stop_after`` simulates a crash (tests)."""
    gen = seed_everything(seed)
    student = build_student(cfg.backbone, 1, cfg.teacher_dim, cfg.embed_dim, cfg.input_size)
    teacher = TeacherModel(student).eval()
    opt = AdamP(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    # STML uses a single group: every training object is a candidate neighbour of every other.
    sampler = KnnBatchSampler(np.zeros(len(crops), dtype=np.int64), 1, cfg.queries, cfg.neighbours, seed)
    start = _resume(checkpoint, fingerprint, student, teacher, opt, sched, sampler, gen)
    if start == 0:
        log_path.write_text("\t".join(LOG_COLUMNS) + "\n")
    student.train_mode(cfg.freeze_bn)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", unit="step")
    for step in bar:
        if step % cfg.knn_refresh == 0 or sampler.neighbours is None:
            sampler.refresh(embed_tensor(teacher.embed, crops, cfg.batch_embed, desc="k-NN refresh"))
        idx = torch.from_numpy(sampler.sample())
        x = crops[idx].float().div_(255)
        views = random_resized_views(x, N_VIEWS, cfg.aug_scale, gen, cfg.input_size)
        terms = stml_loss(student, teacher, views, cfg)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        teacher.ema_update(student, cfg.ema)
        row = [step, lr] + [float(terms[k].detach()) for k in LOG_COLUMNS[2:]]
        with open(log_path, "a", newline="") as f:
            csv.writer(f, delimiter="\t").writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        bar.set_postfix(loss=f"{row[2]:.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save(checkpoint, fingerprint, done, student, teacher, opt, sched, sampler, gen)
        if stop_after is not None and done >= stop_after:
            break
    return TrainResult(student.eval(), cfg.steps, start)


def _save(path: Path, fingerprint: str, step: int, student, teacher, opt, sched, sampler, gen) -> None:
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
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(path: Path, fingerprint: str, student, teacher, opt, sched, sampler, gen) -> int:
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
    log.info("train: resuming from step %d of %s", state["step"], path)
    return int(state["step"])
