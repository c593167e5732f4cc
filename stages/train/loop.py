"""The training engine: models, optimiser, devices, processes and checkpoints around a
:class:`~stages.train.methods.Method` (MS-UGCML, STML, the NT-Xent baseline).

Resumable: every ``checkpoint_every`` steps the student, teacher, optimiser, scheduler, method
(sampler, neighbour graph, centroids) and RNG states are written atomically; a restarted run with
the same fingerprint continues from there and ends with the same weights as an uninterrupted run.
On CUDA the backbone runs under autocast (``train.precision``) and ``torch.compile``
(``train.compile``); under torchrun each rank computes its slice of the global batch (see
:mod:`stages.train.runtime`).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from stages.backbones import DEFAULT_BACKBONE, learning_rate
from stages.config import BackboneOptions, TrainParams
from stages.train.methods import (  # noqa: F401  (re-exported for callers of the old module)
    LOSS_TERMS,
    N_VIEWS,
    Method,
    build_method,
    kmeans_centroids,
    mixed_scale_sets,
    ugcml_terms,
)
from stages.train.model import StudentModel, TeacherModel, build_student
from stages.train.optim import AdamP
from stages.train.runtime import Runtime, resolve_runtime

log = logging.getLogger(__name__)
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


@torch.no_grad()
def refresh_embeddings(
    student: StudentModel,
    crops: torch.Tensor,
    group_of: np.ndarray,
    batch: int,
    freeze_bn: bool,
    runtime: Runtime | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """h and l of every training crop from its own group's head, in one backbone pass per batch.

    Under torchrun each rank embeds its share of the crops and the shares are gathered: every
    rank returns all N rows."""
    rt = runtime or Runtime(torch.device("cpu"))
    part = rt.shard(len(crops))
    mine, groups = crops[part], torch.from_numpy(np.asarray(group_of)[part])
    student.eval()
    hs, ls = [], []
    starts = range(0, len(mine), batch)
    for s in tqdm(
        starts, desc="refresh k-NN/centroids", unit="batch", leave=False, disable=len(starts) < 2 or not rt.is_main
    ):
        x = mine[s : s + batch].to(rt.device, non_blocking=True).float().div_(255)
        with rt.autocast():
            h, l = student.embed_by_group(x, groups[s : s + batch].to(rt.device))
        hs.append(h.float())
        ls.append(l.float())
    student.train_mode(freeze_bn)
    dims = (student.heads[0].h.out_features, student.heads[0].l.out_features)
    h = torch.cat(hs) if hs else torch.empty(0, dims[0], device=rt.device)
    l = torch.cat(ls) if ls else torch.empty(0, dims[1], device=rt.device)
    return rt.gather_rows(h, len(crops)).cpu().numpy(), rt.gather_rows(l, len(crops)).cpu().numpy()


def step_terms(
    rt: Runtime,
    method: Method,
    student: StudentModel,
    backbone,
    teacher_fwd,
    load,
    idx: torch.Tensor,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Loss terms of the global batch ``idx``: this rank embeds its rows (``backbone`` may be the
    DDP/compiled student backbone), the features of all ranks are gathered, and every rank
    evaluates the same loss on them."""
    lo, hi = rt.rows(len(idx))
    inputs = method.inputs(load(idx[lo:hi]), gen, (lo, hi))
    with rt.autocast():
        if teacher_fwd is not None:  # first: its buffers come and go before the student's graph holds memory
            with torch.no_grad():
                t = teacher_fwd(inputs)
        feat = backbone(inputs)
    feat = rt.gather_blocks(feat.float(), method.blocks)
    t = rt.gather_blocks(t.float(), method.blocks) if teacher_fwd is not None else None
    return method.loss(student.heads, feat, t, idx, gen)


@dataclass
class Engine:
    """One optimisation step of any method, the same on one CPU, one GPU or many processes."""

    rt: Runtime
    method: Method
    student: StudentModel
    backbone: nn.Module  # the student's backbone, or its DDP/compiled wrapper
    teacher: TeacherModel | None
    teacher_fwd: nn.Module | None  # the teacher, or its compiled wrapper
    load: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: float

    def step(self, gen: torch.Generator) -> tuple[float, list[float]]:
        """Sample a batch, minimise its loss, update the EMA teacher: (lr used, logged terms)."""
        idx = torch.from_numpy(self.method.batch())
        terms = step_terms(self.rt, self.method, self.student, self.backbone, self.teacher_fwd, self.load, idx, gen)
        self.opt.zero_grad(set_to_none=True)
        (terms["loss"] if self.scaler is None else self.scaler.scale(terms["loss"])).backward()
        self.rt.average_grads(list(self.student.heads.parameters()))  # the backbone's are averaged by DDP
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        if self.teacher is not None:
            self.teacher.ema_update(self.student, self.ema)
        return lr, torch.stack([terms[k].detach().float() for k in LOG_COLUMNS[2:]]).tolist()  # one sync


@dataclass
class TrainResult:
    student: StudentModel
    steps: int
    resumed_from: int
    is_main: bool = True  # rank 0 (or the only process): the one that writes


class BatchLoader:
    """Crops stay uint8 on the CPU; each step's rows go to the device through a pinned buffer."""

    def __init__(self, crops: torch.Tensor, device: torch.device):
        self.crops, self.device = crops, device
        self.pinned = device.type == "cuda"
        self.buffer: torch.Tensor | None = None

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.pinned:
            return self.crops[idx].float().div_(255)
        if self.buffer is None or len(self.buffer) != len(idx):
            self.buffer = torch.empty((len(idx), *self.crops.shape[1:]), dtype=self.crops.dtype).pin_memory()
        torch.index_select(self.crops, 0, idx, out=self.buffer)
        return self.buffer.to(self.device, non_blocking=True).float().div_(255)


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
    options: BackboneOptions | None = None,
    runtime: Runtime | None = None,
) -> TrainResult:
    """Train ``cfg.method`` (ms_ugcml, stml, ntxent) on uint8 crops [N, 3, S, S].

    ``group_of`` [N] is each crop's scale group (ms_ugcml has one head per group; stml and ntxent
    use one group). ``stop_after`` stops early as a crash would (tests). ``backbone`` is a registry
    name, built as ``options`` (``backbone_options.<name>``: weights, init) say. Only rank 0 writes
    the checkpoint and the log; every rank returns the same trained student (on the CPU).
    """
    cfg = cfg.model_copy(update={"lr": learning_rate(backbone, options, fallback=cfg.lr)})  # as the train stage does
    rt = runtime or resolve_runtime(cfg)
    try:
        return _train(
            cfg,
            (backbone, options),
            crops,
            group_of,
            n_groups,
            seed,
            Path(checkpoint),
            Path(log_path),
            fingerprint,
            stop_after,
            rt,
        )
    finally:
        rt.close()


def _train(
    cfg, backbone, crops, group_of, n_groups, seed, checkpoint, log_path, fingerprint, stop_after, rt: Runtime
) -> TrainResult:
    if cfg.method != "ms_ugcml":
        group_of, n_groups = np.zeros(len(crops), dtype=np.int64), 1
    rt.rows(cfg.queries * cfg.neighbours)  # the global batch splits evenly over the processes
    gen = seed_everything(seed)
    name, options = backbone
    student = build_student(
        name, n_groups, cfg.teacher_dim, cfg.embed_dim, cfg.input_size, embed_head=cfg.embed_head, options=options
    )
    student.to(rt.device)
    method = build_method(cfg, group_of, n_groups, seed)
    teacher = TeacherModel(student).eval() if method.needs_teacher else None
    opt = AdamP(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    scaler = rt.grad_scaler()
    state = {"history": []}
    parts = {
        "student": student,
        "teacher": teacher,
        "optimizer": opt,
        "scheduler": sched,
        "scaler": scaler,
        "method": method,
    }
    start = _resume(checkpoint, fingerprint, parts, gen, state, rt.device)
    if rt.is_main:  # the log is rewritten from the checkpoint's history: it always matches the weights
        log_path.write_text("".join("\t".join(r) + "\n" for r in [LOG_COLUMNS, *state["history"]]))
    student.train_mode(cfg.freeze_bn)
    backbone = student.backbone
    if rt.distributed:  # averages the backbone gradients of the ranks' slices; heads see all rows
        backbone = DistributedDataParallel(backbone, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    teacher_fwd = teacher
    if rt.compile:
        backbone = torch.compile(backbone)
        teacher_fwd = torch.compile(teacher) if teacher is not None else None
    load = BatchLoader(crops, rt.device)

    def embed_all():
        return refresh_embeddings(student, crops, group_of, cfg.batch_embed, cfg.freeze_bn, rt)

    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"train {cfg.method}",
        unit="step",
        disable=not rt.is_main,
    )
    engine = Engine(rt, method, student, backbone, teacher, teacher_fwd, load, opt, sched, scaler, cfg.ema)
    for step in bar:
        method.before_step(step, embed_all, rt)
        lr, values = engine.step(gen)
        row = [str(step), f"{lr:.6g}"] + [f"{v:.6g}" for v in values]
        state["history"].append(row)
        done = step + 1
        if rt.is_main:
            with open(log_path, "a") as f:
                f.write("\t".join(row) + "\n")
            bar.set_postfix(loss=row[2], lr=f"{lr:.2e}")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                _save(checkpoint, fingerprint, done, parts, gen, state)
        if stop_after is not None and done >= stop_after:
            break
    rt.barrier()  # rank 0's checkpoint is complete before any rank moves on
    return TrainResult(student.to("cpu").eval(), cfg.steps, start, rt.is_main)


def _save(path: Path, fingerprint: str, step: int, parts: dict, gen: torch.Generator, extra: dict) -> None:
    state = {
        "fingerprint": fingerprint,
        "step": step,
        **{k: None if v is None else v.state_dict() for k, v in parts.items()},
        "torch_rng": torch.get_rng_state(),
        "generator": gen.get_state(),
        "history": json.dumps(extra["history"]),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(path: Path, fingerprint: str, parts: dict, gen: torch.Generator, extra: dict, device: torch.device) -> int:
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
    for key, part in parts.items():
        if part is not None and state.get(key) is not None:
            part.load_state_dict(state[key])
    method = parts["method"]
    if getattr(method, "centroids", None) is not None:
        method.centroids = method.centroids.to(device)
    torch.set_rng_state(state["torch_rng"])
    gen.set_state(state["generator"])
    extra["history"] = json.loads(state["history"])[: int(state["step"])]
    log.info("train: resuming from step %d of %s", state["step"], path)
    return int(state["step"])
