"""The evaluation protocol as a function: (index dir, dataset table, tasks, params) -> metrics.

Streamed: queries are searched ``evaluate.query_chunk`` at a time; each chunk's ranking is
looked up in relevance labels prepared once per gallery (:class:`RelevanceLookup`) and reduced
to per-query metric values (a few floats per query); subsets (all / known / unknown, size
buckets) are averaged at the end.  Memory is the index, the gallery's box table and one chunk's
``[chunk, K]`` ranking, whatever the number of queries.

Known / unknown: a query's class is known when its category NAME is among the training
dataset's known class names (``tasks.json`` ``known_names``), so any dataset can be evaluated
against the task split of the dataset the model was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stages.config import Params
from stages.data.table import ImageTable
from stages.metrics.relevance import ANY_OVERLAP, RelevanceLookup, relevant_classes
from stages.metrics.retrieval import per_query_metrics, summarize_per_query
from stages.shards import BOX_COLUMNS

log = logging.getLogger(__name__)

EMBEDDINGS = ("model", "pretrained")
LEVELS = ("O", "I")  # object level (IoU >= evaluate.object_iou), image level (any overlap)
HEADLINE = ("R@1", "R@5", "R@10", "mAP", "mAP_std", "mMP@5")
# Query-size buckets of the paper's Tables III-IV, by sqrt(box area) in pixels.
SIZE_BUCKETS = {
    "size_0-20": (0, 20),
    "size_20-30": (20, 30),
    "size_30-60": (30, 60),
    "size_60-100": (60, 100),
    "size_100+": (100, np.inf),
}


def known_category_ids(categories: pd.DataFrame, tasks: dict) -> np.ndarray:
    """Ids of this dataset's categories whose name is a known class of the training task.

    Falls back to ``tasks["known"]`` ids when ``tasks.json`` predates ``known_names``.
    """
    if "known_names" in tasks:
        names = set(tasks["known_names"])
        return categories.loc[categories["name"].isin(names), "category_id"].to_numpy(np.int64)
    return np.asarray(tasks["known"], dtype=np.int64)


def query_masks(queries: pd.DataFrame, known_ids) -> dict[str, np.ndarray]:
    """all / known / unknown classes, and the paper's query-size buckets."""
    known = queries["category_id"].isin(list(known_ids)).to_numpy()
    side = np.sqrt(queries["area"].to_numpy(np.float64))
    masks = {"all": np.ones(len(queries), bool), "known": known, "unknown": ~known}
    masks.update({name: (side >= lo) & (side < hi) for name, (lo, hi) in SIZE_BUCKETS.items()})
    return masks


def ground_truth(test: ImageTable) -> pd.DataFrame:
    """Every GT box of the split (queries or not), clipped to its image: what labels gallery objects."""
    gt = test.boxes.merge(test.images[["image_id", "width", "height"]], on="image_id", how="inner")
    b = gt[BOX_COLUMNS].to_numpy(np.float64)
    w, h = gt["width"].to_numpy(np.float64), gt["height"].to_numpy(np.float64)
    b = np.stack(
        [np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h), np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)], axis=1
    )
    return gt.assign(x1=b[:, 0], y1=b[:, 1], x2=b[:, 2], y2=b[:, 3])


def relevance_lookups(
    gallery: pd.DataFrame, gt: pd.DataFrame, class_codes: np.ndarray, object_iou: float
) -> dict[str, RelevanceLookup]:
    """Object- and image-level relevance labels of the gallery, prepared once.

    ``class_codes`` are the dense class codes (0..C-1) of the ``gt`` rows.
    """
    n_classes = int(class_codes.max()) + 1 if class_codes.size else 0
    args = (
        gallery["image_id"].to_numpy(np.int64),
        gallery[BOX_COLUMNS].to_numpy(np.float64),
        gt["image_id"].to_numpy(np.int64),
        gt[BOX_COLUMNS].to_numpy(np.float64),
        class_codes,
    )
    g_img = gallery["image_id"].to_numpy(np.int64)
    return {
        "O": RelevanceLookup(relevant_classes(*args, iou_threshold=object_iou, n_classes=n_classes), g_img),
        "I": RelevanceLookup(relevant_classes(*args, iou_threshold=ANY_OVERLAP, n_classes=n_classes), g_img),
    }


def break_ties(dist: np.ndarray, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each result row by (distance, gallery row): equal distances rank the lower row first.

    FAISS does not fix the order of equidistant items; this makes a ranking with ties (duplicate
    gallery vectors) deterministic.  Empty slots (-1, infinite distance) stay last.
    """
    order = np.lexsort((np.where(ranked < 0, np.iinfo(np.int64).max, ranked), dist), axis=-1)
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(ranked, order, axis=1)


@dataclass
class Scores:
    """Per-query metric values of one embedding, per level, gathered chunk by chunk."""

    per_query: dict[str, dict[str, np.ndarray]]  # level -> metric -> [Q]
    totals: dict[str, np.ndarray]  # level -> relevant items in the gallery per query
    examples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # q -> (rows, dist, O-rel)


def score_queries(
    index,
    query_vectors: np.ndarray,
    query_class: np.ndarray,
    query_image: np.ndarray,
    lookups: dict[str, RelevanceLookup],
    topk: int,
    fetch: int,
    exclude_same_image: bool,
    chunk: int,
    keep: np.ndarray | None = None,
    desc: str | None = None,
) -> Scores:
    """Search ``query_vectors`` chunk by chunk and score each chunk's ranking (vectorised per chunk).

    ``fetch`` items are retrieved per query (``topk`` plus room for the dropped same-image items);
    the first ``topk`` of the (filtered) list are scored.  ``keep``: query rows whose top-5
    (rows, distances, object-level relevance) are kept for the examples sheet.
    """
    n_q = len(query_vectors)
    fetch = max(1, min(fetch, index.ntotal))
    keep_set = set(int(q) for q in (keep if keep is not None else []))
    per_query: dict[str, dict[str, np.ndarray]] = {}
    totals = {level: np.zeros(n_q, np.int64) for level in lookups}
    examples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    starts = range(0, n_q, chunk)
    for s in tqdm(starts, desc=desc, unit="chunk", disable=desc is None or len(starts) < 2):
        e = min(s + chunk, n_q)
        dist, ranked = break_ties(*index.search(np.ascontiguousarray(query_vectors[s:e], dtype=np.float32), fetch))
        for level, lookup in lookups.items():  # two levels
            rel, total, shown = lookup(ranked, query_class[s:e], query_image[s:e], exclude_same_image)
            values = per_query_metrics(rel[:, :topk], total)
            store = per_query.setdefault(level, {k: np.full(n_q, np.nan) for k in values})
            for key, v in values.items():
                store[key][s:e] = v
            totals[level][s:e] = total
            for q in [q for q in keep_set if s <= q < e] if level == "O" else []:  # a few example queries
                row = shown[q - s, :5]
                # distance of each shown item: its slot in the unfiltered list (rows are unique per query)
                slot = np.argmax(ranked[q - s][None, :] == row[:, None], axis=1)
                examples[q] = (row, np.where(row >= 0, dist[q - s, slot], np.nan), rel[q - s, :5])
    return Scores(per_query, totals, examples)


def choose_examples(masks: dict[str, np.ndarray], n: int, seed: int) -> np.ndarray:
    """``n`` distinct query rows, seeded, taken round-robin over the non-empty size buckets."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(masks[b])).tolist() for b in SIZE_BUCKETS if masks[b].any()]
    chosen: list[int] = []
    while len(chosen) < n and any(pools):
        for pool in pools:  # at most 5 buckets per round
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return np.asarray(sorted(chosen), dtype=np.int64)


def _atomic_json(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def evaluate_index(
    index_dir: Path,
    test: ImageTable,
    tasks: dict,
    params: Params,
    metrics_path: Path | None = None,
    plots_dir: Path | None = None,
    embeddings: tuple[str, ...] = EMBEDDINGS,
    header: dict | None = None,
) -> dict:
    """Metrics of every embedding indexed in ``index_dir`` on the dataset split ``test``.

    ``index_dir`` is an index stage output (gallery.parquet, queries.parquet, <embedding>/
    gallery.faiss + queries.npy); ``test`` the COCO table of the split it indexed (its GT boxes,
    queries or not, label the gallery); ``tasks`` the training dataset's ``tasks.json``.
    Writes the metrics JSON to ``metrics_path`` and the pictures (per-bucket bars, retrieval
    examples) into ``plots_dir`` when given.  ``embeddings``: the subfolders of ``index_dir`` to
    score; ``header``: leading keys of the JSON (e.g. backbone, dataset). Keys: ``<embedding>.<subset>.<level>-<metric>``,
    e.g. ``model.all.O-R@1``, ``model.size_0-20.O-mAP`` (paper mAP), ``O-mAP_std`` (standard AP).
    """
    from stages.index.faiss_index import load_for_search

    cfg = params.evaluate
    index_dir = Path(index_dir)
    for needed in ("gallery.parquet", "queries.parquet"):
        if not (index_dir / needed).exists():
            raise FileNotFoundError(f"{index_dir / needed} not found; run the index stage first")
    gallery = pd.read_parquet(index_dir / "gallery.parquet", columns=["object_id", "image_id", *BOX_COLUMNS])
    queries = pd.read_parquet(index_dir / "queries.parquet")
    gt = ground_truth(test)
    # dense class codes shared by GT and queries (category ids may be large or sparse)
    classes = np.unique(
        np.concatenate([gt["category_id"].to_numpy(np.int64), queries["category_id"].to_numpy(np.int64)])
    )
    gt_codes = np.searchsorted(classes, gt["category_id"].to_numpy(np.int64))
    q_class = np.searchsorted(classes, queries["category_id"].to_numpy(np.int64))
    q_image = queries["image_id"].to_numpy(np.int64)
    lookups = relevance_lookups(gallery, gt, gt_codes, cfg.object_iou)
    known_ids = known_category_ids(test.categories, tasks)
    masks = query_masks(queries, known_ids)
    # Excluding same-image items shortens lists: fetch enough to still fill topk.
    per_image = int(gallery.groupby("image_id").size().max()) if len(gallery) else 0
    fetch = cfg.topk + (per_image if cfg.exclude_same_image else 0)
    examples = choose_examples(masks, cfg.examples, params.seed) if plots_dir is not None else None

    metrics: dict = {
        **(header or {}),
        "groups": params.groups,
        "task": params.task,
        "gallery": len(gallery),
        "queries": len(queries),
    }
    scores: dict[str, Scores] = {}
    for name in embeddings:
        index_file = index_dir / name / "gallery.faiss"
        if not index_file.exists():
            raise FileNotFoundError(f"{index_file} not found; run the index stage first")
        index = load_for_search(index_file, params.index)
        vectors = np.load(index_dir / name / "queries.npy", mmap_mode="r")
        sc = score_queries(
            index,
            vectors,
            q_class,
            q_image,
            lookups,
            cfg.topk,
            fetch,
            cfg.exclude_same_image,
            cfg.query_chunk,
            keep=examples if name == "model" else None,
            desc=f"search ({name})",
        )
        scores[name] = sc
        result: dict = {subset: {"queries": int(m.sum())} for subset, m in masks.items()}
        for level in LEVELS:
            summary = summarize_per_query(sc.per_query[level], sc.totals[level], masks)
            for subset, values in summary.items():
                result[subset].update({f"{level}-{k}": values[k] for k in HEADLINE})
        metrics[name] = result
    if metrics_path is not None:
        _atomic_json(metrics_path, metrics)
    if plots_dir is not None and "model" in scores:
        from stages.evaluate.plots import write_bucket_plots, write_examples_sheet

        write_bucket_plots(metrics, plots_dir)
        ex = scores["model"].examples
        names = dict(zip(test.categories["category_id"], test.categories["name"]))
        write_examples_sheet(
            ex, queries, gallery, test.images, names, Path(plots_dir) / "examples.png", params.extract.crop_size
        )
    return metrics
