"""The evaluate stage: object- and image-level retrieval metrics into ``metrics/*.json``.

Object level: a returned gallery object is relevant when its IoU with a ground-truth box of the
query's class is >= ``evaluate.object_iou`` (0.3); image level: any overlap (paper V-A).
Reported for all / known / unknown query classes of the configured task and for the paper's
query-size buckets (Tables III-IV), for the trained model and for the same backbone without
training (``pretrained``).
"""

from __future__ import annotations

import json
import logging

import faiss
import numpy as np
import pandas as pd

from stages import layout
from stages.config import Params
from stages.index import EMBEDDINGS
from stages.metrics.relevance import ANY_OVERLAP, relevance_matrix, relevant_classes
from stages.metrics.retrieval import summarize
from stages.shards import BOX_COLUMNS

log = logging.getLogger(__name__)
HEADLINE = ("R@1", "R@5", "R@10", "mAP", "mAP_std", "mMP@5")
# Query-size buckets of the paper's Tables III-IV, by sqrt(box area) in pixels.
SIZE_BUCKETS = {"size_0-20": (0, 20), "size_20-30": (20, 30), "size_30-60": (30, 60), "size_60-100": (60, 100), "size_100+": (100, np.inf)}


def query_masks(queries: pd.DataFrame, known_ids: list[int]) -> dict[str, np.ndarray]:
    """all / known / unknown classes, and the paper's query-size buckets."""
    known = queries["category_id"].isin(known_ids).to_numpy()
    side = np.sqrt(queries["area"].to_numpy(np.float64))
    masks = {"all": np.ones(len(queries), bool), "known": known, "unknown": ~known}
    masks.update({name: (side >= lo) & (side < hi) for name, (lo, hi) in SIZE_BUCKETS.items()})
    return masks


def search(index: faiss.Index, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-k gallery rows per query (-1 padded), exact for a Flat index."""
    _, ranked = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))
    return ranked


def evaluate_ranking(
    ranked: np.ndarray, queries: pd.DataFrame, gallery: pd.DataFrame, labels: dict, masks: dict, exclude_same_image: bool, topk: int
) -> dict:
    """Metrics of one ranking at object ('O-') and image ('I-') level, per query subset."""
    result: dict = {name: {"queries": int(m.sum())} for name, m in masks.items()}
    for level, lab in labels.items():
        rel, total = relevance_matrix(
            ranked,
            queries["category_id"].to_numpy(np.int64),
            lab,
            queries["image_id"].to_numpy(np.int64),
            gallery["image_id"].to_numpy(np.int64),
            exclude_same_image=exclude_same_image,
        )
        summary = summarize(rel[:, :topk], total, masks)
        for name, values in summary.items():
            result[name].update({f"{level}-{k}": values[k] for k in HEADLINE})
    return result


def run(params: Params, backbone: str | None = None, dataset: str | None = None) -> None:
    """Metrics of ``backbone``'s model on ``dataset`` into metrics/<backbone>/<dataset>.json."""
    cfg = params.evaluate
    backbone, dataset = params.backbone(backbone), params.dataset(dataset)
    index_dir = layout.index_dir(backbone, dataset)
    gallery = pd.read_parquet(index_dir / "gallery.parquet")
    queries = pd.read_parquet(index_dir / "queries.parquet")
    tasks = json.loads((layout.SPLITS / "tasks.json").read_text())
    n_classes = int(max(tasks["known"] + tasks["unknown"] + [int(queries["category_id"].max())])) + 1
    args = (
        gallery["image_id"].to_numpy(np.int64),
        gallery[BOX_COLUMNS].to_numpy(np.float64),
        queries["image_id"].to_numpy(np.int64),
        queries[BOX_COLUMNS].to_numpy(np.float64),
        queries["category_id"].to_numpy(np.int64),
    )
    labels = {
        "O": relevant_classes(*args, iou_threshold=cfg.object_iou, n_classes=n_classes),
        "I": relevant_classes(*args, iou_threshold=ANY_OVERLAP, n_classes=n_classes),
    }
    masks = query_masks(queries, tasks["known"])
    # Excluding same-image items shortens lists: fetch enough to still fill topk.
    per_image = int(gallery.groupby("image_id").size().max())
    fetch = cfg.topk + (per_image if cfg.exclude_same_image else 0)
    metrics: dict = {"backbone": backbone, "dataset": dataset, "groups": params.groups, "task": params.task, "gallery": len(gallery)}
    for name in EMBEDDINGS:
        index = faiss.read_index(str(index_dir / name / "gallery.faiss"))
        ranked = search(index, np.load(index_dir / name / "queries.npy"), fetch)
        metrics[name] = evaluate_ranking(ranked, queries, gallery, labels, masks, cfg.exclude_same_image, cfg.topk)
    path = layout.metrics_file(backbone, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    m, p = metrics["model"]["all"], metrics["pretrained"]["all"]
    log.info(
        "evaluate: O-R@1 %.2f (pretrained %.2f), O-mAP %.2f (%.2f), I-R@1 %.2f (%.2f), I-mAP %.2f (%.2f)",
        m["O-R@1"], p["O-R@1"], m["O-mAP"], p["O-mAP"], m["I-R@1"], p["I-R@1"], m["I-mAP"], p["I-mAP"],
    )
