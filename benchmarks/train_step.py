"""Cost of one MS-UGCML training step against the plain physical work of that step.

Reference: student forward+backward and teacher forward of the same backbone on the same views
(nothing else). Step: the training engine's own step (`stages.train.loop.Engine.step`: k-NN batch
sampling, augmentation, every loss term, backward, AdamP, schedule, EMA, the logged values; under
the deterministic CPU kernels, as in training).
`step_ratio_gG` = reference time / step time for G groups (1.0 = no overhead; target >= 0.85).
`deterministic_ratio_*` = step time with PyTorch's default CPU kernels / with the deterministic
ones that training runs under (1.0 = free; < 1: their cost).
`refresh_ratio` = time of one neighbour-graph + centroid refresh over N crops / time of embedding
the same crops with the backbone alone (target <= 1.15).
Every ratio is the median of 3 rounds (with `_min`/`_max`), each from medians over interleaved
runs (a shared machine's noise hits both alike).

Writes benchmarks/results/train_step.json. Run: `python benchmarks/train_step.py`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import adamp
import numpy as np
import torch

from stages.backbones import DEFAULT_BACKBONE
from stages.config import TrainParams
from stages.index.embed import embed_tensor
from stages.model import TeacherModel, build_student
from stages.samplers import KnnBatchSampler
from stages.train.loop import BatchLoader, Engine, cosine_lr, refresh_embeddings
from stages.train.methods import N_VIEWS, build_method, kmeans_centroids
from stages.train.optim import AdamP
from stages.train.runtime import Runtime

RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"
CFG = TrainParams(method="ms_ugcml", lr=3e-4)
REPEATS = 15
ROUNDS = 3  # independent measurements of each ratio; the JSON has their median, min and max


def interleaved(a, b, repeats: int = REPEATS, warmup: int = 1) -> tuple[float, float]:
    """Median times of ``a`` and ``b`` run in turn (so that a shared machine's noise hits both alike)."""
    for _ in range(warmup):
        a()
        b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in zip((a, b), times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def _engine(groups: int, crops: torch.Tensor, cfg: TrainParams) -> tuple[Engine, torch.Generator, torch.Tensor]:
    """The training engine of ``groups`` heads on ``crops`` after its first k-NN refresh, its
    generator, and the augmented views of one batch (for the reference)."""
    gen = torch.Generator().manual_seed(0)
    rt = Runtime(torch.device("cpu"))
    group_of = np.arange(len(crops)) % groups
    student = build_student(DEFAULT_BACKBONE, groups, cfg.teacher_dim, cfg.embed_dim, cfg.input_size).train_mode(
        cfg.freeze_bn
    )
    teacher = TeacherModel(student).eval()
    opt = AdamP(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    method = build_method(cfg, group_of, groups, 0)
    engine = Engine(
        rt,
        method,
        student,
        student.backbone,
        teacher,
        teacher,
        BatchLoader(crops, rt.device),
        opt,
        sched,
        None,
        cfg.ema,
    )
    method.before_step(
        0,
        lambda rows=None: refresh_embeddings(student, crops, group_of, cfg.batch_embed, cfg.freeze_bn, rt, rows=rows),
        rt,
    )  # the graph (not timed)
    n = cfg.queries * cfg.neighbours
    return engine, gen, method.inputs(crops[:n].float() / 255, gen, (0, n))


def _deterministic_step(engine: Engine, gen: torch.Generator) -> None:
    with engine.rt.deterministic_kernels():  # as train_model runs every step on the CPU
        engine.step(gen)


def step_ratio(groups: int, crops: torch.Tensor, cfg: TrainParams = CFG) -> float:
    engine, gen, views = _engine(groups, crops, cfg)
    student, teacher = engine.student, engine.teacher

    def reference():
        with torch.no_grad():
            teacher(views)
        student.backbone(views).sum().backward()
        student.zero_grad(set_to_none=True)

    ref, step = interleaved(reference, lambda: _deterministic_step(engine, gen), warmup=3)
    return ref / step


def deterministic_ratio(groups: int, crops: torch.Tensor, cfg: TrainParams = CFG) -> float:
    """Step time with PyTorch's default CPU kernels / with the deterministic ones training uses."""
    engine, gen, _ = _engine(groups, crops, cfg)
    default, deterministic = interleaved(lambda: engine.step(gen), lambda: _deterministic_step(engine, gen), warmup=3)
    return default / deterministic


def optimizer_speedup(groups: int = 8) -> float:
    """The adamp package's AdamP step time / ours, on the same student's parameters and grads."""
    student = build_student(DEFAULT_BACKBONE, groups, CFG.teacher_dim, CFG.embed_dim, CFG.input_size)
    params = list(student.parameters())
    g = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    ours = AdamP(params, lr=CFG.lr, weight_decay=CFG.weight_decay)
    package = adamp.AdamP(params, lr=CFG.lr, weight_decay=CFG.weight_decay)
    ref, new = interleaved(package.step, ours.step)
    return ref / new


def refresh_ratio(crops: torch.Tensor, groups: int = 4) -> float:
    student = build_student(DEFAULT_BACKBONE, groups, CFG.teacher_dim, CFG.embed_dim, CFG.input_size).eval()
    group_of = np.arange(len(crops)) % groups
    sampler = KnnBatchSampler(group_of, groups, CFG.queries, CFG.neighbours, 0)

    def bare():
        embed_tensor(student.backbone, crops, CFG.batch_embed)

    def refresh():
        emb = refresh_embeddings(student, crops, group_of, CFG.batch_embed, True)
        sampler.refresh(emb.h)
        kmeans_centroids(emb.l, CFG.clusters, 0)

    base, full = interleaved(bare, refresh, repeats=3)
    return full / base


def rounds(name: str, measure, result: dict) -> None:
    """``result[name]``: the median of ROUNDS measurements, with their min and max (rounds minutes
    apart: a shared machine's slow drifts show as the spread)."""
    runs = [measure() for _ in range(ROUNDS)]
    result[name] = round(float(np.median(runs)), 3)
    result[f"{name}_min"], result[f"{name}_max"] = round(min(runs), 3), round(max(runs), 3)
    print(f"{name:<22s} {result[name]} (rounds: {', '.join(f'{r:.3f}' for r in runs)})", flush=True)


def main() -> None:
    torch.manual_seed(0)
    crops = (torch.rand(4096, 3, CFG.input_size, CFG.input_size) * 255).to(torch.uint8)
    result: dict = {}
    for g in (1, 4, 8):
        rounds(f"step_ratio_g{g}", lambda g=g: step_ratio(g, crops), result)
    # the heads' and the optimiser's cost per step does not grow with the input size, the backbone's does
    big = CFG.model_copy(update={"input_size": 128})
    crops_big = (torch.rand(1024, 3, big.input_size, big.input_size) * 255).to(torch.uint8)
    rounds("step_ratio_g8_input128", lambda: step_ratio(8, crops_big, big), result)
    # a retraining is bit-identical on the CPU because every step runs under the deterministic kernels
    rounds("deterministic_ratio_g4", lambda: deterministic_ratio(4, crops), result)
    rounds("deterministic_ratio_g8_input128", lambda: deterministic_ratio(8, crops_big, big), result)
    rounds("refresh_ratio", lambda: refresh_ratio(crops), result)
    result["adamp_speedup_g8"] = round(optimizer_speedup(8), 3)
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)  # other processes on the machine
    result.update(
        batch_crops=CFG.queries * CFG.neighbours, views=N_VIEWS, input_size=CFG.input_size, refresh_crops=len(crops)
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
