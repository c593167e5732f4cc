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
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from stages.atomic import save_torch, write_text
from stages.backbones import DEFAULT_BACKBONE, learning_rate
from stages.config import BackboneOptions, TrainParams
from stages.model import StudentModel, TeacherModel, build_student
from stages.train.data import CropSource, EmbeddingStore, as_source, batch_loader, chunked
from stages.train.methods import LOSS_TERMS, Method, build_method
from stages.train.optim import AdamP
from stages.train.runtime import Runtime, resolve_runtime

log = logging.getLogger(__name__)
LOG_COLUMNS = ["step", "lr", *LOSS_TERMS]  # then "ts_distance" (with a teacher) and the method's diagnostics


def log_columns(method: Method, with_teacher: bool) -> list[str]:
    """The columns of train_log.tsv for a method: every loss term, the relative teacher-student
    parameter distance and the method's per-group / per-pair values."""
    return LOG_COLUMNS + (["ts_distance"] if with_teacher else []) + list(method.diagnostics)


@torch.no_grad()
def parameter_distance(teacher: nn.Module, student: nn.Module) -> torch.Tensor:
    """||theta_t - theta_s|| / ||theta_s|| over the backbone parameters (how far the EMA teacher lags)."""
    t, s = list(teacher.parameters()), list(student.parameters())
    diff = torch.stack(torch._foreach_norm(torch._foreach_sub(t, s))).norm()
    return diff / torch.stack(torch._foreach_norm(s)).norm().clamp_min(1e-12)


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
    crops,
    group_of: np.ndarray,
    batch: int,
    freeze_bn: bool,
    runtime: Runtime | None = None,
    *,
    rows: np.ndarray | None = None,
    memory_gb: float = float("inf"),
    folder: Path | None = None,
    workers: int = 0,
) -> EmbeddingStore:
    """h and l of the training crops ``rows`` (None: all) from each crop's own group's head, one
    backbone pass per ``batch`` crops, the crops streamed from ``crops`` (a tensor or a
    :mod:`stages.train.data` source, decoded by ``workers`` processes).

    The result is an :class:`EmbeddingStore`: float32 in memory when it fits ``memory_gb``, else
    float16 files in ``folder`` written chunk by chunk. Under torchrun each rank embeds its share
    of the rows: in memory the shares are gathered (every rank gets all rows), on disk each rank
    writes its share into the same files (``folder`` must be on a file system all ranks see)."""
    rt = runtime or Runtime(torch.device("cpu"))
    source = as_source(crops)
    items = np.arange(len(source)) if rows is None else np.asarray(rows, dtype=np.int64)
    dims = (student.heads[0].h.out_features, student.heads[0].l.out_features)
    store = EmbeddingStore.create(len(items), dims, memory_gb, folder, create=rt.is_main)
    gather = store.in_memory and rt.distributed
    if not store.in_memory:
        rt.barrier()  # rank 0 has made the files
    part = rt.shard(len(items))
    mine = items[part]
    groups = torch.from_numpy(np.asarray(group_of)[mine])
    student.eval()
    hs, ls = [], []
    pieces = list(chunked(mine, batch))
    loader = batch_loader(source, pieces, workers, pin=rt.device.type == "cuda")
    at = 0
    bar = tqdm(loader, total=len(pieces), desc="refresh k-NN/centroids", unit="batch", leave=False)
    bar.disable = len(pieces) < 2 or not rt.is_main
    for x in bar:
        x = x.to(rt.device, non_blocking=True).float().div_(255)
        with rt.autocast():
            h, l = student.embed_by_group(x, groups[at : at + len(x)].to(rt.device))
        if gather:
            hs.append(h.float())
            ls.append(l.float())
        else:
            store.h.write(part.start + at, h.float().cpu().numpy())
            store.l.write(part.start + at, l.float().cpu().numpy())
        at += len(x)
    student.train_mode(freeze_bn)
    if gather:
        h = torch.cat(hs) if hs else torch.empty(0, dims[0], device=rt.device)
        l = torch.cat(ls) if ls else torch.empty(0, dims[1], device=rt.device)
        store.h.write(0, rt.gather_rows(h, len(items)).cpu().numpy())
        store.l.write(0, rt.gather_rows(l, len(items)).cpu().numpy())
    if not store.in_memory:
        rt.barrier()  # every rank's share is on disk
    return store


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
    ema_every: int = 1

    def step(
        self,
        gen: torch.Generator,
        idx: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        step: int = 0,
    ) -> tuple[float, list[float]]:
        """Minimise the loss of the global batch ``idx`` (None: sampled now) and, when ``step`` (the
        step's 0-based number) is a multiple of ``ema_every``, update the EMA teacher after the
        optimiser's step: (lr used, logged terms). ``rows``: this rank's uint8 crops of ``idx``,
        already loaded (by the data loader's workers); None: loaded now through ``load``."""
        if idx is None:
            idx = torch.from_numpy(self.method.batch())
        load = self.load if rows is None else _Loaded(rows, self.rt.device)
        terms = step_terms(self.rt, self.method, self.student, self.backbone, self.teacher_fwd, load, idx, gen)
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
        logged = [terms[k].detach().float() for k in LOSS_TERMS]
        if self.teacher is not None:
            if step % self.ema_every == 0:
                self.teacher.ema_update(self.student, self.ema)
            logged.append(parameter_distance(self.teacher.backbone, self.student.backbone).float())
        logged = torch.stack(logged)
        if "diagnostics" in terms:
            logged = torch.cat([logged, terms["diagnostics"].float().to(logged.device)])
        return lr, logged.tolist()  # one sync


@dataclass
class TrainResult:
    student: StudentModel
    steps: int
    resumed_from: int
    is_main: bool = True  # rank 0 (or the only process): the one that writes


class _Loaded:
    """The load function of a step whose uint8 crops are already loaded (maybe pinned)."""

    def __init__(self, rows: torch.Tensor, device: torch.device):
        self.rows, self.device = rows, device

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows.to(self.device, non_blocking=True).float().div_(255)


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


def resolve_train_params(cfg: TrainParams, backbone: str, options: BackboneOptions | None) -> TrainParams:
    """``cfg`` with the learning rate ``backbone`` trains at: ``backbone_options.<name>.lr``, else
    ``train.lr``, else the backbone's default (the one place this precedence is applied)."""
    return cfg.model_copy(update={"lr": learning_rate(backbone, options, fallback=cfg.lr)})


@dataclass(frozen=True)
class TrainingSet:
    """What a run trains on: the crops (a uint8 tensor ``[N, 3, S, S]`` or a source of
    :mod:`stages.train.data`: in memory or streamed from the packed crops) and each crop's scale group."""

    crops: torch.Tensor | CropSource
    group_of: np.ndarray  # [N] group of each crop (ms_ugcml: one head per group)
    n_groups: int
    group_area: np.ndarray | None = None  # [n_groups] mean box area (train.quota: size_area)


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its state: the resumable checkpoint, the per-step log, and the run's
    identity (a checkpoint of another fingerprint is not resumed)."""

    checkpoint: Path
    log: Path
    fingerprint: str


def train_model(
    cfg: TrainParams,
    data: TrainingSet,
    files: RunFiles,
    *,
    seed: int,
    backbone: str = DEFAULT_BACKBONE,
    options: BackboneOptions | None = None,
    stop_after: int | None = None,
    runtime: Runtime | None = None,
) -> TrainResult:
    """Train ``cfg.method`` (ms_ugcml, stml, ntxent) on ``data``; ``cfg.lr`` must be resolved
    (:func:`resolve_train_params`).

    stml and ntxent use one group. ``stop_after`` stops early as a crash would (tests).
    ``backbone`` is a registry name, built as ``options`` (``backbone_options.<name>``: weights,
    init) say. Only rank 0 writes the checkpoint and the log; every rank returns the same trained
    student (on the CPU).
    """
    if cfg.lr is None:
        raise ValueError(
            "train_model needs a resolved learning rate: pass resolve_train_params(cfg, backbone, options)"
        )
    rt = runtime or resolve_runtime(cfg)
    try:
        with rt.deterministic_kernels():
            return _train(cfg, data, files, seed=seed, net=(backbone, options), stop_after=stop_after, rt=rt)
    finally:
        rt.close()


def _train(
    cfg: TrainParams, data: TrainingSet, files: RunFiles, *, seed: int, net: tuple, stop_after: int | None, rt: Runtime
) -> TrainResult:
    source, group_of, n_groups = as_source(data.crops), data.group_of, data.n_groups
    if cfg.method != "ms_ugcml":
        group_of, n_groups = np.zeros(len(source), dtype=np.int64), 1
    lo, hi = rt.rows(cfg.queries * cfg.neighbours)  # the global batch splits evenly over the processes
    gen = seed_everything(seed)
    name, options = net
    student = build_student(
        name,
        n_groups,
        cfg.teacher_dim,
        cfg.embed_dim,
        cfg.input_size,
        embed_head=cfg.embed_head,
        options=options,
        head_init=cfg.heads_init(n_groups),
    )
    student.to(rt.device)
    method = build_method(cfg, group_of, n_groups, seed, data.group_area if n_groups == data.n_groups else None)
    teacher = TeacherModel(student, cfg.teacher_heads).eval() if method.needs_teacher else None
    opt = AdamP(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    scaler = rt.grad_scaler()
    state = {"history": [], "pending": None}
    parts = {
        "student": student,
        "teacher": teacher,
        "optimizer": opt,
        "scheduler": sched,
        "scaler": scaler,
        "method": method,
    }
    start = _resume(files.checkpoint, files.fingerprint, parts, gen, state, rt.device)
    if rt.is_main:  # the log is rewritten from the checkpoint's history: it always matches the weights
        header = log_columns(method, teacher is not None)
        write_text(files.log, "".join("\t".join(r) + "\n" for r in [header, *state["history"]]))
    student.train_mode(cfg.freeze_bn)
    student_fwd, teacher_fwd = _forward_modules(student, teacher, rt)
    pin = rt.device.type == "cuda"

    def load(idx: torch.Tensor) -> torch.Tensor:
        return source.load(idx.numpy()).to(rt.device, non_blocking=True).float().div_(255)

    engine = Engine(
        rt, method, student, student_fwd, teacher, teacher_fwd, load, opt, sched, scaler, cfg.ema, cfg.ema_every
    )
    scratch = files.checkpoint.parent / f"{files.checkpoint.stem}.refresh"

    def embed_all(rows: np.ndarray | None = None) -> EmbeddingStore:
        return refresh_embeddings(
            student,
            source,
            group_of,
            cfg.batch_embed,
            cfg.freeze_bn,
            rt,
            rows=rows,
            memory_gb=cfg.refresh_memory_gb,
            folder=scratch,
            workers=cfg.workers,
        )

    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.method}", unit="step", disable=not rt.is_main)
    step, stopped = start, False
    while step < cfg.steps and not stopped:
        # A period runs to the next refresh: its batches are drawn at its start, so that the
        # loader's workers read and decode them ahead of the steps; a checkpoint keeps the rest.
        method.before_step(step, embed_all, rt)
        period = state["pending"]
        if period is None or len(period) == 0:
            end = min(cfg.steps, (step // cfg.knn_refresh + 1) * cfg.knn_refresh)
            period = np.stack([method.batch() for _ in range(step, end)])
        loader = batch_loader(source, [b[lo:hi] for b in period], cfg.workers, pin, cfg.prefetch)
        for i, rows in enumerate(loader):
            lr, values = engine.step(gen, torch.from_numpy(period[i]), rows, step)
            row = [str(step), f"{lr:.6g}"] + [f"{v:.6g}" for v in values]
            state["history"].append(row)
            state["pending"] = period[i + 1 :]
            step += 1
            if rt.is_main:
                with open(files.log, "a") as f:
                    f.write("\t".join(row) + "\n")
                bar.update(1)
                bar.set_postfix(loss=row[2], lr=f"{lr:.2e}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    _save(files.checkpoint, files.fingerprint, step, parts, gen, state)
            if stop_after is not None and step >= stop_after:
                stopped = True
                break
        del loader  # its workers stop here
    bar.close()
    rt.barrier()  # rank 0's checkpoint is complete before any rank moves on
    if rt.is_main:
        shutil.rmtree(scratch, ignore_errors=True)
    return TrainResult(student.to("cpu").eval(), cfg.steps, start, rt.is_main)


def _forward_modules(
    student: StudentModel, teacher: TeacherModel | None, rt: Runtime
) -> tuple[nn.Module, nn.Module | None]:
    """The modules a step calls: the student's backbone (wrapped in DDP under torchrun, so the
    ranks' backbone gradients are averaged; heads see all rows) and the teacher, both compiled
    when ``train.compile`` applies."""
    backbone: nn.Module = student.backbone
    if rt.distributed:
        backbone = DistributedDataParallel(backbone, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    teacher_fwd: nn.Module | None = teacher
    if rt.compile:
        backbone = torch.compile(backbone)
        teacher_fwd = torch.compile(teacher) if teacher is not None else None
    return backbone, teacher_fwd


def _save(path: Path, fingerprint: str, step: int, parts: dict, gen: torch.Generator, extra: dict) -> None:
    state = {
        "fingerprint": fingerprint,
        "step": step,
        **{k: None if v is None else v.state_dict() for k, v in parts.items()},
        "torch_rng": torch.get_rng_state(),
        "generator": gen.get_state(),
        "history": json.dumps(extra["history"]),
        # the batches drawn for the rest of the current period (the loader's position)
        "pending": None if extra["pending"] is None else torch.from_numpy(np.ascontiguousarray(extra["pending"])),
    }
    save_torch(path, state)


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
    extra["pending"] = None if state.get("pending") is None else state["pending"].numpy()
    log.info("train: resuming from step %d of %s", state["step"], path)
    return int(state["step"])
