"""Query latency of the search page's server on a 100,000-object gallery, after start-up.

A scratch project in a temporary folder, laid out like a real run (stages.layout):

* ``data/synthetic/dataset/test.json`` + 50 generated 256x256 PNG photos (random rectangles);
* ``models/<backbone>/model.pt``: the default backbone (EfficientNet-Lite0, its real ImageNet
  weights) with one untrained head of the default ``train.embed_dim``: the same network, input
  size and cost as a trained model;
* ``index/<backbone>/synthetic/``: ``gallery.parquet`` with ``--gallery`` objects (random boxes
  spread over the photos) and, per embedding, a FAISS index built by the pipeline's own builder
  (``index.type: auto`` -> flat at this size) over random L2-normalised vectors of the model's
  real dimension (512 trained, 1280 pretrained: read from the model).

The server is the real app (:func:`stages.serve.app.create_app` over
:class:`stages.serve.engine.Engine`) behind FastAPI's in-process test client. Start-up (model and
index loads, one warm-up query) is timed apart; torch and FAISS run one thread each, as the
``serve`` command sets them (``--threads 1``); then ``--queries`` box queries (a random box of a
random photo: read the photo, crop, embed, FAISS search, hits to JSON) are timed one by one,
wall clock around each POST /api/search, for the trained embedding and then the pretrained one.

Writes benchmarks/results/serve.json: query_ms_p50 / query_ms_p95 (trained embedding, k = 10),
gallery, the pretrained embedding's figures, "more results" latency, start-up seconds.
Run: `python benchmarks/serve.py [--gallery 100000] [--queries 300]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `stages`, not an installed copy
RESULTS = ROOT / "benchmarks" / "results" / "serve.json"
IMAGES, SIDE, CHUNK, SEED, K = 50, 256, 50_000, 0, 10


def write_photos(dataset_dir: Path, rng: np.random.Generator) -> None:
    import cv2

    (dataset_dir / "images").mkdir(parents=True)
    entries = []
    for i in range(1, IMAGES + 1):
        image = np.full((SIDE, SIDE, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(12):
            x, y = rng.integers(0, SIDE - 8, 2)
            w, h = rng.integers(8, 96, 2)
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), rng.integers(0, 255, 3).tolist(), -1)
        cv2.imwrite(str(dataset_dir / "images" / f"{i:06d}.png"), image)
        entries.append({"id": i, "file_name": f"images/{i:06d}.png", "width": SIDE, "height": SIDE})
    coco = {"images": entries, "annotations": [], "categories": []}
    (dataset_dir / "test.json").write_text(json.dumps(coco))


def write_model(path: Path, params) -> dict[str, int]:
    """The default backbone with one fresh head; returns the dimension of each embedding."""
    import torch

    from stages.model import backbone_meta, build_student, pretrained_model, save_model

    backbone, cfg = params.backbones[0], params.train
    options = params.backbone_options.get(backbone)
    model = build_student(backbone, 1, cfg.teacher_dim, cfg.embed_dim, cfg.input_size, options=options).eval()
    meta = {
        "method": "benchmark",
        **backbone_meta(backbone, options),
        "n_heads": 1,
        "embed_head": cfg.embed_head,
        "teacher_dim": cfg.teacher_dim,
        "embed_dim": cfg.embed_dim,
        "input_size": cfg.input_size,
    }
    path.parent.mkdir(parents=True)
    save_model(path, model, meta)
    x = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
    return {"model": int(model.embed(x).shape[1]), "pretrained": int(pretrained_model(meta).embed(x).shape[1])}


def write_index(index_dir: Path, n: int, dims: dict[str, int], params, rng: np.random.Generator) -> dict:
    import faiss
    import pandas as pd

    from stages.vectors.faiss_index import build_from_chunks

    index_dir.mkdir(parents=True)
    xy = rng.uniform(0, SIDE - 40, (n, 2))
    wh = rng.uniform(4, 40, (n, 2))
    objects = pd.DataFrame(
        {
            "object_id": np.arange(n, dtype=np.int64),
            "image_id": rng.integers(1, IMAGES + 1, n).astype(np.int64),
            "x1": xy[:, 0],
            "y1": xy[:, 1],
            "x2": xy[:, 0] + wh[:, 0],
            "y2": xy[:, 1] + wh[:, 1],
            "area": wh[:, 0] * wh[:, 1],
            "score": rng.uniform(0, 1, n),
        }
    )
    objects.to_parquet(index_dir / "gallery.parquet", index=False)
    info = {"gallery": n}
    for name, d in dims.items():

        def chunks(d=d):
            for s in range(0, n, CHUNK):
                v = rng.standard_normal((min(CHUNK, n - s), d), dtype=np.float32)
                yield v / np.linalg.norm(v, axis=1, keepdims=True)

        index, kind = build_from_chunks(chunks(), n, d, params.index)
        (index_dir / name).mkdir()
        faiss.write_index(index, str(index_dir / name / "gallery.faiss"))
        info[name] = {"type": kind, "dim": d, "ntotal": int(index.ntotal)}
    (index_dir / "index.json").write_text(json.dumps(info, indent=2))
    return info


def percentiles(ms: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(ms, 50)), 1), round(float(np.percentile(ms, 95)), 1)


def time_queries(client, embedding: str, n: int, rng: np.random.Generator) -> tuple[list[float], list[str]]:
    ms, tokens = [], []
    for _ in range(n):  # bounded: n requests, in process, no network
        x, y = rng.uniform(0, SIDE - 64, 2)
        w, h = rng.uniform(8, 64, 2)
        body = {"image_id": int(rng.integers(1, IMAGES + 1)), "box": [x, y, x + w, y + h], "k": K}
        body["embedding"] = embedding
        t0 = time.perf_counter()
        res = client.post("/api/search", json=body)
        ms.append((time.perf_counter() - t0) * 1000)
        if res.status_code != 200 or len(res.json()["hits"]) != K:
            raise RuntimeError(f"query failed: {res.status_code} {res.text[:300]}")
        tokens.append(res.json()["token"])
    return ms, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from stages import layout
    from stages.config import Params
    from stages.serve import compute_threads
    from stages.serve.app import create_app
    from stages.serve.engine import Engine, Selection

    params = Params.model_validate({"index": {"gpu": False}})
    backbone, dataset = params.backbones[0], params.train_on
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root = Path(tmp)
        write_photos(root / layout.dataset_dir(dataset), rng)
        dims = write_model(root / layout.model_dir(backbone) / "model.pt", params)
        info = write_index(root / layout.index_dir(backbone, dataset), args.gallery, dims, params, rng)

        compute_threads(1)  # as `python -m stages serve` (--threads 1)
        t0 = time.perf_counter()
        engine = Engine(params, root)
        engine.warm_up(Selection(backbone, dataset, "model"))
        startup_s = time.perf_counter() - t0
        client = TestClient(create_app(engine, Selection(backbone, dataset, "model"), k=K), base_url="http://127.0.0.1")
        model_ms, tokens = time_queries(client, "model", args.queries, rng)
        more_ms = []
        for token in tokens[-100:]:  # the most recent (the server keeps the last 256 queries)
            t0 = time.perf_counter()
            res = client.post("/api/more", json={"token": token, "offset": K, "k": K})
            more_ms.append((time.perf_counter() - t0) * 1000)
            assert res.status_code == 200 and len(res.json()["hits"]) == K
        t0 = time.perf_counter()
        engine.warm_up(Selection(backbone, dataset, "pretrained"))
        switch_s = time.perf_counter() - t0
        pre_ms, _ = time_queries(client, "pretrained", args.queries, rng)

    p50, p95 = percentiles(model_ms)
    pre50, pre95 = percentiles(pre_ms)
    more50, more95 = percentiles(more_ms)
    out = {
        "query_ms_p50": p50,
        "query_ms_p95": p95,
        "gallery": args.gallery,
        "queries": args.queries,
        "k": K,
        "embedding": "model",
        "dim": info["model"]["dim"],
        "index_type": info["model"]["type"],
        "query_ms_max": round(max(model_ms), 1),
        "pretrained_query_ms_p50": pre50,
        "pretrained_query_ms_p95": pre95,
        "pretrained_dim": info["pretrained"]["dim"],
        "more_ms_p50": more50,
        "more_ms_p95": more95,
        "startup_s": round(startup_s, 2),
        "switch_embedding_s": round(switch_s, 2),
        "client": "FastAPI TestClient (in process)",
        "threads": 1,
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
