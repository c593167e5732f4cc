"""GPU readiness: every CUDA path once, in one short script (< 8 minutes on one data-centre GPU).

Needs no download and no data beyond what ``make repro`` makes (data/synthetic objects, splits,
groups). Sections (each timed; a failing section records its error and the others still run):

* ``train_bf16`` / ``train_fp16``: 50 steps of ms_ugcml on the default training crops with
  ``train.precision`` bf16 / fp16 and ``torch.compile``; images/s of the steady steps (after 10)
  against the bare backbone's forward+backward on the same number of views (compiled, same
  autocast): ``ratio`` = step images/s / bare images/s;
* ``sam_tiny`` / ``sam_vit_b``: the tiny random SAM and a ViT-B SAM with random weights, images
  at 1024², through our extractor (``stages.extract.extract_tables``) against
  ``SamAutomaticMaskGenerator.generate`` on the same images: images/s of each and their ratio;
* ``faiss_gpu_flat``: exact FAISS GPU search of 50,000 × 863,000 × 512 (k = 100): seconds;
* ``ddp_nccl``: a 2-process NCCL DDP training run (3 steps) when 2 GPUs are visible.

Writes benchmarks/results/gpu_check.json. Run: ``python benchmarks/gpu_check.py`` on the GPU
machine; ``--cpu`` is a smoke run of the same code paths on the CPU at tiny sizes (no CUDA, no
ViT-B, no FAISS GPU; it writes benchmarks/results/gpu_check_cpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _train_cfg(cpu: bool, precision: str, steps: int):
    from stages.config import load_params

    params = load_params(ROOT / "params.yaml")
    cfg = params.train.model_copy(
        update={
            "method": "ms_ugcml",
            "steps": steps,
            "precision": precision,
            "compile": not cpu,
            "device": "cpu" if cpu else "cuda",
            "checkpoint_every": 10_000,
        }
    )
    return params, cfg


def section_train(cpu: bool, precision: str) -> dict:
    """50 ms_ugcml steps (bf16/fp16 + compile) on the default crops vs the bare backbone's fwd+bwd."""
    import stages.train.loop as loop
    from stages import layout
    from stages.backbones import DEFAULT_BACKBONE
    from stages.model import build_student
    from stages.train import load_training_crops, resolved_train_params

    steps = 12 if cpu else 50
    params, cfg = _train_cfg(cpu, precision, steps)
    cfg = resolved_train_params(params.model_copy(update={"train": cfg}), DEFAULT_BACKBONE)
    table, crops = load_training_crops(layout.objects_dir(params.train_on), cfg.input_size, cfg.cache_gb)
    stamps: list[float] = []
    original = loop.Engine.step

    def timed(self, *a, **kw):
        out = original(self, *a, **kw)  # the logged values are read: the step is complete
        stamps.append(time.perf_counter())
        return out

    loop.Engine.step = timed
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        t0 = time.perf_counter()
        loop.train_model(
            cfg,
            loop.TrainingSet(crops, table["group"].to_numpy(np.int64), params.groups),
            loop.RunFiles(work / "c.pt", work / "l.tsv", "gpu_check"),
            seed=0,
        )
        total = time.perf_counter() - t0
    finally:
        loop.Engine.step = original
        shutil.rmtree(work, ignore_errors=True)
    skip = 2 if cpu else 10
    steady = float(np.median(np.diff(stamps[skip:])))
    views = 2 * cfg.queries * cfg.neighbours
    # the bare backbone: forward + backward of the same number of views, same autocast and compile
    device = torch.device("cpu" if cpu else "cuda")
    net = build_student(DEFAULT_BACKBONE, params.groups, cfg.teacher_dim, cfg.embed_dim, cfg.input_size).to(device)
    net.train_mode(cfg.freeze_bn)
    backbone = net.backbone if cpu else torch.compile(net.backbone)
    x = torch.rand(views, 3, cfg.input_size, cfg.input_size, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    times = []
    for i in range(4 if cpu else 30):
        _sync()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=not cpu):
            loss = backbone(x).float().square().mean()
        loss.backward()
        _sync()
        if i >= (1 if cpu else 5):
            times.append(time.perf_counter() - t)
    bare = float(np.median(times))
    return {
        "steps": steps,
        "views_per_step": views,
        "input_size": cfg.input_size,
        "seconds_total": round(total, 2),
        "step_images_per_s": round(views / steady, 1),
        "bare_images_per_s": round(views / bare, 1),
        "ratio": round(bare / steady, 3),
    }


def _photos(folder: Path, side: int, n: int):
    import cv2
    import pandas as pd
    import skimage.data

    paths = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket"][:n]):
        img = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        img = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
        path = folder / f"{i}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return pd.DataFrame({"image_id": np.arange(len(paths)), "path": paths})


def section_sam(cpu: bool, model: str) -> dict:
    """Our extractor (decode thread, generator, crops, shards) vs SamAutomaticMaskGenerator.generate."""
    import cv2
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

    from stages.config import ExtractParams
    from stages.extract import extract_tables
    from stages.extract.sam import SamExtractor
    from tests.extract.tiny_sam import TINY_BUILDERS, TINY_PARAMS, save_tiny_checkpoint

    work = Path(tempfile.mkdtemp(prefix="gpu_check_sam_"))
    try:
        side, n = (256, 2) if cpu else (1024, 4)
        images = _photos(work, side, n)
        if model == "tiny":
            checkpoint, builders = save_tiny_checkpoint(work / "tiny.pth"), TINY_BUILDERS
            points = 8
        else:  # ViT-B with random weights: segment-anything's own builder, no checkpoint file read
            torch.save(sam_model_registry["vit_b"]().state_dict(), work / "vit_b.pth")
            checkpoint, builders, points = str(work / "vit_b.pth"), None, 32
        sam = {**TINY_PARAMS, "checkpoint": checkpoint, "points_per_side": points, "points_per_batch": 64}
        sam |= {"device": "cpu" if cpu else "cuda", "model_type": "vit_b"}
        cfg = ExtractParams(extractor="sam", sam=sam)
        extractor = SamExtractor(cfg.sam, builders=builders)
        generator = SamAutomaticMaskGenerator(
            extractor.generator.predictor.model,
            points_per_side=cfg.sam.points_per_side,
            points_per_batch=cfg.sam.points_per_batch,
            pred_iou_thresh=cfg.sam.pred_iou_thresh,
            stability_score_thresh=cfg.sam.stability_score_thresh,
            box_nms_thresh=cfg.sam.box_nms_thresh,
        )

        def reference():
            for path in images["path"]:
                generator.generate(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
            _sync()

        def stage():
            shutil.rmtree(work / "objects", ignore_errors=True)
            extract_tables({"train": images}, work / "objects", extractor, cfg, "gpu_check")
            _sync()

        reference()  # warm-up (cuDNN autotuning, allocator)
        t0 = time.perf_counter()
        reference()
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        stage()
        t_stage = time.perf_counter() - t0
        return {
            "model": model,
            "image_side": side,
            "images": n,
            "points_per_side": points,
            "stage_images_per_s": round(n / t_stage, 3),
            "generator_images_per_s": round(n / t_ref, 3),
            "ratio": round(t_ref / t_stage, 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def section_faiss(cpu: bool) -> dict:
    import faiss

    nq, nb, d = (500, 8_630, 512) if cpu else (50_000, 863_000, 512)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((nb, d), dtype=np.float32)
    xq = rng.standard_normal((nq, d), dtype=np.float32)
    index = faiss.IndexFlatL2(d)
    gpu = not cpu
    if gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
    index.add(xb)
    t0 = time.perf_counter()
    for lo in range(0, nq, 4096):
        index.search(xq[lo : lo + 4096], 100)
    return {"queries": nq, "gallery": nb, "dim": d, "k": 100, "gpu": gpu, "seconds": round(time.perf_counter() - t0, 3)}


def _ddp_worker(rank: int, world: int, port: int, root: str, cpu: bool) -> None:
    from stages import layout
    from stages.backbones import DEFAULT_BACKBONE
    from stages.train import load_training_crops, resolved_train_params
    from stages.train.loop import RunFiles, TrainingSet, train_model

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    params, cfg = _train_cfg(cpu, "bf16", 3)
    cfg = cfg.model_copy(update={"compile": False, "nproc": world})
    cfg = resolved_train_params(params.model_copy(update={"train": cfg}), DEFAULT_BACKBONE)
    table, crops = load_training_crops(layout.objects_dir(params.train_on), cfg.input_size, cfg.cache_gb)
    out = Path(root)
    res = train_model(
        cfg,
        TrainingSet(crops, table["group"].to_numpy(np.int64), params.groups),
        RunFiles(out / "c.pt", out / "l.tsv", "ddp"),
        seed=0,
    )
    if rank == 0:
        (out / "ok").write_text(str(res.steps))


def section_ddp(cpu: bool) -> dict:
    import torch.multiprocessing as mp

    if not cpu and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU visible (needs 2)"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tempfile.mkdtemp(prefix="gpu_check_ddp_")
    try:
        t0 = time.perf_counter()
        mp.spawn(_ddp_worker, args=(2, port, work, cpu), nprocs=2, join=True)
        return {"backend": "gloo" if cpu else "nccl", "steps": 3, "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true", help="smoke run on the CPU at tiny sizes")
    args = ap.parse_args()
    cpu = args.cpu
    if not cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu for the smoke run")
    sections = {
        "train_bf16": lambda: section_train(cpu, "bf16"),
        "train_fp16": lambda: section_train(cpu, "fp16"),
        "sam_tiny": lambda: section_sam(cpu, "tiny"),
        "sam_vit_b": (lambda: {"skipped": "--cpu"}) if cpu else (lambda: section_sam(cpu, "vit_b")),
        "faiss_gpu_flat": lambda: section_faiss(cpu),
        "ddp_nccl": lambda: section_ddp(cpu),
    }
    result = {"device": "cpu (smoke run)" if cpu else torch.cuda.get_device_name(0), "torch": torch.__version__}
    start = time.perf_counter()
    for name, fn in sections.items():
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # one broken path must not hide the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        result[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(result[name]), flush=True)
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    from stages.atomic import write_json

    write_json(RESULTS / ("gpu_check_cpu.json" if cpu else "gpu_check.json"), result)


if __name__ == "__main__":
    main()
