"""A gallery larger than memory: IVF-PQ built chunk by chunk, its peak memory and recall@1.

Synthetic gallery: N x 512 float32 vectors generated in chunks of 100,000 (never all at once)
with low intrinsic dimension, like learned embeddings: a 32-d standard normal latent through a
fixed random 32 -> 512 linear map, plus isotropic noise (std 0.02 per dimension).  Queries:
``--queries`` (default 10,000) fresh draws from the same generator (the standard ANN protocol: they
are not gallery copies).  The recorded 10M run used 2,000 queries (``index_recall_queries``): the
exact search of 10,000 queries over 10M vectors is ~45 min on 2 shared cores.

Index: the pipeline's own builder (:func:`stages.vectors.faiss_index.build_from_chunks`), IVF-PQ
with nlist 1024, m 64 (64 bytes per vector), nbits 8, nprobe 32, trained on the first 65,536
rows (the chunks are i.i.d., so this is a uniform sample), then the chunks added one by one.
(The ``auto`` nlist of 10M objects, 16,384, trains too slowly on 2 CPU cores.)

* ``index_memory_ratio``: peak RSS of the build-and-search process (``ru_maxrss``) / N*512*4
  bytes (the raw float32 gallery).
* ``index_recall_at_1``: share of the queries whose IVF-PQ top-1 is their exact nearest
  neighbour over the whole gallery; the exact search streams the regenerated chunks through
  ``faiss.knn`` (same seed, same chunks) and keeps each query's best.  Also
  ``index_recall_1_at_10``: the exact nearest neighbour is among the IVF-PQ top 10.

Writes index_memory_ratio, index_recall_at_1 and gallery_size into benchmarks/results/scale_out.json
(read-modify-write: the Ray benchmark writes its keys into the same file).
Run: `python benchmarks/index_scale.py [--gallery N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `stages`, not an installed copy
RESULTS = ROOT / "benchmarks" / "results" / "scale_out.json"
DIM, LATENT, NOISE, CHUNK, SEED = 512, 32, 0.02, 100_000, 0
IVFPQ = {"nlist": 1024, "m": 64, "nbits": 8, "nprobe": 32, "train_size": 65_536}


def _projection() -> np.ndarray:
    return (np.random.default_rng(SEED).standard_normal((LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)


def draw(rng: np.random.Generator, n: int, proj: np.ndarray) -> np.ndarray:
    z = rng.standard_normal((n, LATENT), dtype=np.float32)
    return z @ proj + NOISE * rng.standard_normal((n, DIM), dtype=np.float32)


def gallery_chunks(n: int):
    proj = _projection()
    for i, s in enumerate(range(0, n, CHUNK)):
        yield draw(np.random.default_rng([SEED, 1, i]), min(CHUNK, n - s), proj)


def queries(n_queries: int) -> np.ndarray:
    return draw(np.random.default_rng([SEED, 2]), n_queries, _projection())


def build_and_search(n: int, n_queries: int, out: Path) -> dict:
    import faiss
    from tqdm import tqdm

    from stages.config import IndexParams
    from stages.vectors.faiss_index import build_from_chunks, set_search_params

    params = IndexParams(type="ivfpq", gpu=False, ivfpq=IVFPQ)
    t0 = time.perf_counter()
    sample = next(gallery_chunks(n))[: IVFPQ["train_size"]]
    chunks = tqdm(gallery_chunks(n), total=-(-n // CHUNK), desc="add", unit="chunk", file=sys.stderr)
    index, kind = build_from_chunks(chunks, n, DIM, params, train_sample=sample)
    del sample
    build_s = time.perf_counter() - t0
    set_search_params(index, params)
    t0 = time.perf_counter()
    _, ids = index.search(queries(n_queries), 10)
    search_s = time.perf_counter() - t0
    np.save(out / "ivfpq.npy", ids)
    assert kind == "ivfpq" and index.ntotal == n
    return {"build_s": build_s, "search_s": search_s, "index_bytes": int(faiss.serialize_index(index).size)}


def exact(n: int, n_queries: int, out: Path) -> dict:
    import faiss

    q = queries(n_queries)
    best_d = np.full(n_queries, np.inf, np.float32)
    best_i = np.full(n_queries, -1, np.int64)
    t0 = time.perf_counter()
    offset = 0
    for chunk in gallery_chunks(n):  # stream: one chunk of raw vectors at a time
        d, i = faiss.knn(q, chunk, 1)
        better = d[:, 0] < best_d
        best_d[better], best_i[better] = d[better, 0], i[better, 0] + offset
        offset += len(chunk)
    np.save(out / "exact.npy", best_i)
    return {"exact_s": time.perf_counter() - t0}


def _child(phase: str, args, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--out",
        str(out),
        "--gallery",
        str(args.gallery),
        "--queries",
        str(args.queries),
    ]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"phase {phase} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--phase", choices=["index", "exact"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.phase:
        fn = build_and_search if args.phase == "index" else exact
        result = fn(args.gallery, args.queries, args.out)
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(json.dumps(result))
        return
    out = Path(tempfile.mkdtemp(prefix="bench_index_scale_"))
    idx = _child("index", args, out)
    print(
        f"IVF-PQ: built in {idx['build_s']:.0f} s, searched in {idx['search_s']:.0f} s, peak {idx['peak_gb']:.2f} GB",
        flush=True,
    )
    ex = _child("exact", args, out)
    print(f"exact search: {ex['exact_s']:.0f} s", flush=True)
    approx, truth = np.load(out / "ivfpq.npy"), np.load(out / "exact.npy")
    recall = float((approx[:, 0] == truth).mean())
    recall_10 = float((approx == truth[:, None]).any(axis=1).mean())
    raw_gb = args.gallery * DIM * 4 / 1024**3
    keys = {
        "index_memory_ratio": round(idx["peak_gb"] / raw_gb, 4),
        "index_recall_at_1": round(recall, 4),
        "gallery_size": args.gallery,
        "index_peak_gb": round(idx["peak_gb"], 3),
        "index_raw_gb": round(raw_gb, 3),
        "index_file_gb": round(idx["index_bytes"] / 1024**3, 3),
        "index_recall_1_at_10": round(recall_10, 4),
        "index_recall_queries": args.queries,
        "index_type": "ivfpq nlist=1024 m=64 nbits=8 nprobe=32",
        "index_build_s": round(idx["build_s"], 1),
        "index_search_s": round(idx["search_s"], 1),
    }
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    # read-modify-write: other benchmarks own the other keys of this file
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(keys)
    tmp = RESULTS.with_name(RESULTS.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    print(json.dumps(keys, indent=2))


if __name__ == "__main__":
    main()
