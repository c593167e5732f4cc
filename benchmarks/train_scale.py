"""Training at scale: memory and speed of the streamed data path and of a refresh, at 1M crops.

Writes ``--crops`` (1,000,000) synthetic JPEG crops (32-64 px, a pool of random pictures reused)
into shards the way the extract stage does (ShardWriter), then, each in its own process:

* ``train``: 50 ntxent steps (batch 40, ``workers: 2``) on the train stage's streamed path (the
  crops packed once, then each read by its offset), at N and at N/10; peak memory of the process
  tree (main + workers, proportional set size, sampled); the packing is timed apart;
* ``train_shards``: the same steps reading each crop by id from the Parquet shards (the path
  before the pack: every shard opened parses a ~17 MB footer);
* ``memory``: the same 50 steps with the crops the steps use held in memory (the in-memory path
  costs the same per step whatever N is: one index_select); ``stream_over_memory`` = steps/s
  streamed / steps/s in memory;
* ``refresh``: a full refresh over all N crops (every crop read from the pack and embedded,
  float16 store on disk, k-NN graph per group: fast-scan IVF-PQ candidates re-ranked exactly
  above ``knn_exact_max``, k-means centroids), at N and N/10, with a stand-in network (pooling +
  the h/l heads: the data path and FAISS cost what they cost, the embedding almost nothing);
* ``embed``: the real backbone's embedding time per crop on the same streamed crops (a sample).

``refresh_ratio_1m`` = (real embedding + everything else the refresh does, per crop at N) / real
embedding per crop: what a refresh costs over embedding the same crops alone. Peak memory is
dominated by what is named in ``dominant``.

Writes benchmarks/results/train_scale.json. Run: ``python benchmarks/train_scale.py``
(``--crops 100000`` for a quick run; the shards are kept in benchmarks/.runs/train_scale).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_scale.json"
RUNS = ROOT / "benchmarks" / ".runs" / "train_scale"
INPUT = 32
STEPS = 50


def write_shards(folder: Path, n: int) -> None:
    """n JPEG crops (ids 0..n-1, four groups) in 50,000-row shards, as the extract stage writes them."""
    from stages.crops.images import encode_crop
    from stages.shards import ShardWriter, objects_table

    if (folder / "done").exists() and int((folder / "done").read_text()) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(4096):  # random smooth pictures, 32-64 px
        h, w = rng.integers(32, 65, 2)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        import cv2

        pool.append(encode_crop(cv2.resize(small, (int(w), int(h)), interpolation=cv2.INTER_CUBIC), "jpeg"))
    writer = ShardWriter(folder, "train", 50_000)
    unit = 10_000
    for lo in range(0, n, unit):
        ids = np.arange(lo, min(n, lo + unit))
        zeros = {c: np.zeros(len(ids), np.float32) for c in ("x1", "y1", "x2", "y2", "area", "score")}
        table = objects_table(
            {
                "object_id": ids,
                "image_id": ids // 50,
                "split": ["train"] * len(ids),
                **zeros,
                "crop": [pool[i % len(pool)] for i in ids],
                "extractor": ["bench"] * len(ids),
            }
        )
        writer.add(table)
    writer.close()
    (folder / "done").write_text(str(n))


class PeakMemory:
    """Peak of the summed proportional set size (PSS) of this process and its children, sampled."""

    def __init__(self, every: float = 0.5):
        import psutil

        self.proc, self.every, self.peak, self._stop = psutil.Process(), every, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except Exception:  # a worker that just exited
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._sample())


def _cfg(**kw):
    from stages.config import TrainParams

    base = dict(method="ntxent", steps=STEPS, queries=8, neighbours=5, input_size=INPUT, workers=2, lr=3e-4)
    return TrainParams(**(base | kw))


def child_train(folder: Path, n: int, mode: str) -> dict:
    """50 steps on n crops: ``pack`` (the train stage's streamed path: packed, then read by
    offset), ``shards`` (read by id from the Parquet shards) or ``memory``."""
    import shutil

    import torch

    from stages.shards.by_id import locate
    from stages.train.data import ShardCrops, pack_crops
    from stages.train.loop import RunFiles, TrainingSet, train_model
    from stages.train.methods import build_method

    cfg = _cfg(checkpoint_every=10_000)
    t0 = time.perf_counter()
    loc = locate(folder, "train", np.arange(n))
    source = ShardCrops(loc, INPUT)
    extra = {}
    if mode == "memory":  # exactly the crops the 50 steps draw, decoded in memory, looked up by index
        draws = build_method(cfg, np.zeros(n, np.int64), 1, 0)
        touched = np.unique(np.concatenate([draws.batch() for _ in range(STEPS)]))
        source = _Touched(source.load(touched), touched, n)
    elif mode == "pack":
        shutil.rmtree(RUNS / f"pack-{n}", ignore_errors=True)
        tp = time.perf_counter()
        source = pack_crops(source, RUNS / f"pack-{n}")
        extra = {"pack_seconds": time.perf_counter() - tp, "pack_gb_on_disk": _gb(RUNS / f"pack-{n}")}
    setup = time.perf_counter() - t0
    out = RUNS / f"train-{n}-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*"):
        f.unlink()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        train_model(
            cfg, TrainingSet(source, np.zeros(n, np.int64), 1), RunFiles(out / "c.pt", out / "l.tsv", "b"), seed=0
        )
        seconds = time.perf_counter() - t0
    del torch
    return {"seconds": seconds, "setup_seconds": setup, "peak_pss_gb": mem.peak / 2**30, "steps": STEPS, **extra}


def _gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*")) / 2**30


class _Touched:
    """In-memory crops of the touched indices only, addressed by their index among all n."""

    def __init__(self, crops, touched: np.ndarray, n: int):
        self.crops = crops
        self.pos = np.full(n, -1, dtype=np.int32)
        self.pos[touched] = np.arange(len(touched))

    def __len__(self) -> int:
        return len(self.pos)

    def load(self, items):
        import torch

        return self.crops[torch.from_numpy(self.pos[items].astype(np.int64))]


def _stand_in_student(teacher_dim: int, embed_dim: int, groups: int):
    """Pooling + the real per-group h/l heads: what a refresh calls, with almost no network cost."""
    import torch
    from torch import nn

    class Stub(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList(
                nn.ModuleDict({"h": nn.Linear(48, teacher_dim), "l": nn.Linear(48, embed_dim)}) for _ in range(groups)
            )

        def embed_by_group(self, x, group):
            f = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
            h = torch.stack([hd["h"](f) for hd in self.heads])[group, torch.arange(len(x))]
            l = torch.stack([hd["l"](f) for hd in self.heads])[group, torch.arange(len(x))]
            return h, l

        def train_mode(self, freeze_bn):
            return self

    return Stub()


def child_refresh(folder: Path, n: int) -> dict:
    import torch

    from stages.samplers import KnnBatchSampler
    from stages.shards.by_id import locate
    from stages.train.data import ShardCrops, pack_crops
    from stages.train.loop import refresh_embeddings
    from stages.train.methods import kmeans_centroids

    cfg = _cfg(method="ms_ugcml", refresh_memory_gb=0.0, batch_embed=512)
    group_of = np.arange(n) % 4
    source = pack_crops(ShardCrops(locate(folder, "train", np.arange(n)), INPUT), RUNS / f"pack-{n}")  # as in training
    student = _stand_in_student(cfg.teacher_dim, cfg.embed_dim, 4)
    sampler = KnnBatchSampler(
        group_of,
        4,
        cfg.queries,
        cfg.neighbours,
        0,
        exact_max=cfg.knn_exact_max,
        nprobe=cfg.knn_nprobe,
        rerank=cfg.knn_rerank,
    )
    scratch = RUNS / f"refresh-{n}"
    with PeakMemory() as mem, torch.no_grad():
        t0 = time.perf_counter()
        emb = refresh_embeddings(
            student, source, group_of, cfg.batch_embed, True, memory_gb=0.0, folder=scratch, workers=cfg.workers
        )
        t1 = time.perf_counter()
        sampler.refresh(emb.h)
        t2 = time.perf_counter()
        kmeans_centroids(emb.l, cfg.clusters, 0)
        t3 = time.perf_counter()
    return {
        "embed_stub_seconds": t1 - t0,
        "knn_seconds": t2 - t1,
        "centroid_seconds": t3 - t2,
        "peak_pss_gb": mem.peak / 2**30,
        "store_gb_on_disk": sum(f.stat().st_size for f in scratch.glob("*.f16")) / 2**30,
        "teacher_dim": cfg.teacher_dim,
        "embed_dim": cfg.embed_dim,
        "knn_exact_max": cfg.knn_exact_max,
    }


def child_embed(folder: Path, n: int, sample: int = 2048) -> dict:
    """Seconds per crop of the real backbone's refresh embedding (h and l by group) on streamed crops."""
    import torch

    from stages.backbones import DEFAULT_BACKBONE
    from stages.model import build_student
    from stages.shards.by_id import locate
    from stages.train.data import ShardCrops
    from stages.train.loop import refresh_embeddings

    cfg = _cfg(method="ms_ugcml")
    rows = np.random.default_rng(1).choice(n, sample, replace=False)
    source = ShardCrops(locate(folder, "train", np.sort(rows)), INPUT)
    student = build_student(DEFAULT_BACKBONE, 4, cfg.teacher_dim, cfg.embed_dim, INPUT)
    group_of = np.arange(sample) % 4
    refresh_embeddings(student, source, group_of[:256], cfg.batch_embed, True, rows=np.arange(256))  # warm-up
    t0 = time.perf_counter()
    refresh_embeddings(student, source, group_of, cfg.batch_embed, True, workers=cfg.workers)
    del torch
    return {"seconds_per_crop": (time.perf_counter() - t0) / sample, "sample": sample, "backbone": DEFAULT_BACKBONE}


def _child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", type=int, default=1_000_000)
    ap.add_argument("--child", choices=["train", "shards", "memory", "refresh", "embed"])
    ap.add_argument("--n", type=int)
    args = ap.parse_args()
    folder = RUNS / f"shards-{args.crops}"
    if args.child:
        fn = {m: (lambda m=m: child_train(folder, args.n, m)) for m in ("shards", "memory")}
        fn["train"] = lambda: child_train(folder, args.n, "pack")
        fn |= {"refresh": lambda: child_refresh(folder, args.n), "embed": lambda: child_embed(folder, args.n)}
        print(json.dumps(fn[args.child]()))
        return
    n, small = args.crops, args.crops // 10
    t0 = time.perf_counter()
    write_shards(folder, n)
    res = {"crops": n, "write_seconds": time.perf_counter() - t0}
    common = ["--crops", str(n), "--n"]
    for name, child, size in [  # streamed and in-memory steps twice each, interleaved: the best of two
        ("train", "train", n),
        ("memory", "memory", n),
        ("train_2", "train", n),
        ("memory_2", "memory", n),
        ("train_small", "train", small),
        ("train_shards", "shards", n),
        ("refresh", "refresh", n),
        ("refresh_small", "refresh", small),
        ("embed", "embed", n),
    ]:
        res[name] = _child(["--child", child, *common, str(size)])
        print(name, res[name], flush=True)
    t_embed = res["embed"]["seconds_per_crop"]
    best = {k: min(res[k]["seconds"], res[f"{k}_2"]["seconds"]) for k in ("train", "memory")}
    peak_train = max(res["train"]["peak_pss_gb"], res["train_2"]["peak_pss_gb"])
    r = res["refresh"]
    graph_per_crop = (r["knn_seconds"] + r["centroid_seconds"] + r["embed_stub_seconds"]) / n
    out = {
        "crops": n,
        "peak_rss_gb_train": round(peak_train, 3),
        "peak_rss_gb_refresh": round(r["peak_pss_gb"], 3),
        "rss_growth_10x": round(
            max(
                peak_train / res["train_small"]["peak_pss_gb"],
                r["peak_pss_gb"] / res["refresh_small"]["peak_pss_gb"],
            ),
            3,
        ),
        "rss_growth_10x_train": round(peak_train / res["train_small"]["peak_pss_gb"], 3),
        "rss_growth_10x_refresh": round(r["peak_pss_gb"] / res["refresh_small"]["peak_pss_gb"], 3),
        "stream_over_memory": round(best["memory"] / best["train"], 3),
        "stream_over_memory_shards": round(best["memory"] / res["train_shards"]["seconds"], 3),
        "pack_seconds_per_1m_crops": round(res["train"]["pack_seconds"] / n * 1e6, 1),
        "refresh_ratio_1m": round((t_embed + graph_per_crop) / t_embed, 3),
        "details": res,
        "notes": "memory = summed PSS of the process tree (main + DataLoader workers), sampled every 0.5 s; "
        "train: ntxent, 50 steps, batch 40, input 32, workers 2, streamed from the packed crops (the train "
        "stage's path above train.cache_gb; packing is setup, timed apart); memory: the same steps with their "
        "crops held in memory; train and memory each run twice, interleaved, the faster run counts (single "
        "50-step runs varied by +-10 % on this shared machine); train_shards: the same steps read by id from "
        "the Parquet shards; refresh: stand-in network (pooling + h/l heads), packed crops, float16 store on "
        "disk, k-NN graph + 100 centroids; refresh_ratio_1m = (backbone embedding per crop, measured on a "
        "sample, + the rest of the 1M refresh per crop, stand-in embedding included) / backbone embedding "
        "per crop",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    from stages.atomic import write_json

    write_json(RESULTS, out)
    print(json.dumps({k: v for k, v in out.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
