"""Cost of the whole streamed evaluation against the bare FAISS search it needs.

Random L2-normalised embeddings: Q queries x G gallery objects x d dims (default the issue's
10,000 x 1,000,000 x 512), 80 gallery boxes per image, one query GT box per image on the
first Q images.  Reference: one ``index.search`` of all queries (same Flat index, same k: the
evaluation's fetch = topk + the largest number of objects per image, as it excludes same-image
objects).  Measured: :func:`stages.evaluate.protocol.evaluate_index` on the written index dir
(index read, relevance labels of the gallery, chunked search, relevance lookup, metrics, JSON).

Each phase runs in its own subprocess; ``peak_gb`` is the evaluation process's peak RSS
(``ru_maxrss``: FAISS allocations included, which tracemalloc misses).
`eval_over_search` = evaluation wall time / bare search wall time (target <= 1.5); `peak_gb` <= 6.
`eval_over_search_cpu`: the same with process CPU time (all threads), steadier on a shared machine.

Writes benchmarks/results/evaluate.json. Run: `python benchmarks/evaluate.py [--gallery N --queries Q]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `stages`, not an installed copy
RESULTS = ROOT / "benchmarks" / "results" / "evaluate.json"
PER_IMAGE = 80
CHUNK = 100_000


def _vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _boxes(rng: np.random.Generator, n: int, size: float = 640.0) -> np.ndarray:
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(4, size * 0.4, (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, size)], axis=1)


def build(work: Path, n_gallery: int, n_queries: int, d: int) -> None:
    """The index dir the evaluation reads, built chunk by chunk, and the dataset tables."""
    import faiss

    rng = np.random.default_rng(0)
    n_images = max(n_queries, -(-n_gallery // PER_IMAGE))
    index = faiss.IndexFlatL2(d)
    for s in range(0, n_gallery, CHUNK):
        index.add(_vectors(rng, min(CHUNK, n_gallery - s), d))
    (work / "model").mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(work / "model" / "gallery.faiss"))
    del index
    g_box = _boxes(rng, n_gallery)
    gallery = pd.DataFrame(g_box, columns=["x1", "y1", "x2", "y2"]).astype(np.float32)
    gallery.insert(0, "image_id", (np.arange(n_gallery) % n_images).astype(np.int64))
    gallery.insert(0, "object_id", np.arange(n_gallery, dtype=np.int64))
    gallery.to_parquet(work / "gallery.parquet", index=False)
    q_box = _boxes(rng, n_queries)
    queries = pd.DataFrame(q_box, columns=["x1", "y1", "x2", "y2"])
    queries.insert(0, "category_id", rng.integers(0, 80, n_queries))
    queries.insert(0, "image_id", np.arange(n_queries, dtype=np.int64))
    queries["area"] = (queries["x2"] - queries["x1"]) * (queries["y2"] - queries["y1"])
    queries.to_parquet(work / "queries.parquet", index=False)
    np.save(work / "model" / "queries.npy", _vectors(rng, n_queries, d))
    pd.DataFrame({"image_id": np.arange(n_images), "path": "", "width": 640, "height": 640}).to_parquet(
        work / "images.parquet"
    )


def _table(work: Path):
    from stages.tables import ImageTable

    queries = pd.read_parquet(work / "queries.parquet")
    cats = pd.DataFrame({"category_id": np.arange(80), "name": [f"c{i}" for i in range(80)]})
    return ImageTable(pd.read_parquet(work / "images.parquet"), queries.drop(columns="area"), cats)


def _params():
    from stages.config import Params

    return Params()


def bare_search(work: Path) -> dict:
    import faiss

    params = _params()
    index = faiss.read_index(str(work / "model" / "gallery.faiss"))
    queries = np.load(work / "model" / "queries.npy")
    per_image = int(pd.read_parquet(work / "gallery.parquet", columns=["image_id"]).groupby("image_id").size().max())
    k = params.evaluate.topk + per_image  # what the evaluation fetches when excluding same-image objects
    t0, c0 = time.perf_counter(), time.process_time()
    index.search(queries, k)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "k": k}


def evaluation(work: Path) -> dict:
    from stages.evaluate.protocol import evaluate_index

    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluate_index(
        work,
        _table(work),
        {"known_names": [f"c{i}" for i in range(40)]},
        _params(),
        embeddings=("model",),
    ).metrics
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "O-R@1": metrics["model"]["all"]["O-R@1"],
    }


def _child(phase: str, work: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--work",
        str(work),
        "--gallery",
        str(args.gallery),
        "--queries",
        str(args.queries),
        "--dim",
        str(args.dim),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"phase {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--phase", choices=["build", "search", "evaluate"])
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.phase:  # a child process: one phase, its result and its own peak RSS as the last line
        result = {
            "build": lambda: build(args.work, args.gallery, args.queries, args.dim) or {},
            "search": lambda: bare_search(args.work),
            "evaluate": lambda: evaluation(args.work),
        }[args.phase]()
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    try:
        t0 = time.perf_counter()
        _child("build", work, args)
        print(f"built {args.gallery} x {args.dim} gallery in {time.perf_counter() - t0:.0f} s", flush=True)
        search = _child("search", work, args)
        print(f"bare search: {search['seconds']:.1f} s (k {search['k']})", flush=True)
        ev = _child("evaluate", work, args)
        print(f"evaluation: {ev['seconds']:.1f} s, peak {ev['peak_gb']:.2f} GB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "eval_over_search": round(ev["seconds"] / search["seconds"], 3),
        "eval_over_search_cpu": round(ev["cpu_seconds"] / search["cpu_seconds"], 3),
        "search_s": round(search["seconds"], 1),
        "eval_s": round(ev["seconds"], 1),
        "peak_gb": round(ev["peak_gb"], 3),
        "search_peak_gb": round(search["peak_gb"], 3),
        "queries": args.queries,
        "gallery": args.gallery,
        "dim": args.dim,
        "k": search["k"],
        "index": "flat",
        "cpu_threads": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
