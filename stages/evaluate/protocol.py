"""The evaluation protocol as a function: (index dir, dataset table, tasks, params) -> metrics.

Streamed: queries are searched ``evaluate.query_chunk`` at a time; each chunk's ranking is
looked up in relevance labels prepared once per gallery (:class:`RelevanceLookup`) and reduced
to per-query metric values (a few floats per query); subsets (all / known / unknown, size
buckets) are averaged at the end.  Memory is the index, the gallery's box table and one chunk's
``[chunk, K]`` ranking, whatever the number of queries.  Pictures are drawn by the stage entry
(:mod:`stages.evaluate.plots`) from the returned :class:`Evaluation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stages import layout
from stages.config import EvaluateParams, Params
from stages.errors import MissingInputError
from stages.evaluate.definitions import HEADLINE, LEVELS, choose_examples, known_category_ids, query_masks
from stages.metrics.relevance import ANY_OVERLAP, RelevanceLookup, relevant_classes
from stages.metrics.retrieval import per_query_metrics, summarize_per_query
from stages.shards import BOX_COLUMNS
from stages.tables import ImageTable
from stages.vectors.faiss_index import load_for_search

log = logging.getLogger(__name__)


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
    # query row -> (gallery rows, distances, object-level relevance) of its top 5
    examples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class QuerySet:
    """The queries of one embedding: vectors ``[Q, d]``, dense class codes and image ids ``[Q]``."""

    vectors: np.ndarray
    class_code: np.ndarray
    image_id: np.ndarray


@dataclass(frozen=True)
class SearchPlan:
    """How queries are searched: ``fetch`` items per query (``topk`` plus room for the dropped
    same-image items), the first ``topk`` of the filtered list scored, ``chunk`` queries at a time."""

    topk: int
    fetch: int
    exclude_same_image: bool
    chunk: int


def score_queries(
    index,
    queries: QuerySet,
    lookups: dict[str, RelevanceLookup],
    plan: SearchPlan,
    *,
    keep: np.ndarray | None = None,
    desc: str | None = None,
) -> Scores:
    """Search the queries chunk by chunk and score each chunk's ranking (vectorised per chunk).

    ``keep``: query rows whose top-5 (rows, distances, object-level relevance) are kept for the
    examples sheet.
    """
    n_q = len(queries.vectors)
    fetch = max(1, min(plan.fetch, index.ntotal))
    keep_set = {int(q) for q in (keep if keep is not None else [])}
    scores = Scores({}, {level: np.zeros(n_q, np.int64) for level in lookups})
    starts = range(0, n_q, plan.chunk)
    for s in tqdm(starts, desc=desc, unit="chunk", disable=desc is None or len(starts) < 2):
        e = min(s + plan.chunk, n_q)
        chunk = np.ascontiguousarray(queries.vectors[s:e], dtype=np.float32)
        dist, ranked = break_ties(*index.search(chunk, fetch))
        for level, lookup in lookups.items():  # two levels
            rel, total, shown = lookup(ranked, queries.class_code[s:e], queries.image_id[s:e], plan.exclude_same_image)
            store = scores.per_query.setdefault(level, {})
            for key, v in per_query_metrics(rel[:, : plan.topk], total).items():
                store.setdefault(key, np.full(n_q, np.nan))[s:e] = v
            scores.totals[level][s:e] = total
            if level == "O":
                _keep_examples(scores.examples, keep_set, s, e, dist, ranked, shown, rel)
    return scores


def _keep_examples(examples: dict, keep: set[int], start: int, end: int, dist, ranked, shown, rel) -> None:
    """The top-5 (gallery rows, distances, relevance) of the kept queries of one chunk."""
    for q in (q for q in keep if start <= q < end):  # a few example queries
        row = shown[q - start, :5]
        # distance of each shown item: its slot in the unfiltered list (rows are unique per query)
        slot = np.argmax(ranked[q - start][None, :] == row[:, None], axis=1)
        examples[q] = (row, np.where(row >= 0, dist[q - start, slot], np.nan), rel[q - start, :5])


@dataclass
class EvaluationSet:
    """Everything one evaluation needs besides the embeddings, prepared once per gallery."""

    gallery: pd.DataFrame  # object_id, image_id, box, in index row order
    queries: pd.DataFrame  # the index stage's query rows (clipped boxes, area)
    class_code: np.ndarray  # dense class code of each query
    lookups: dict[str, RelevanceLookup]  # level -> relevance labels of the gallery
    masks: dict[str, np.ndarray]  # subset -> query mask
    plan: SearchPlan


def prepare(index_dir: Path, test: ImageTable, tasks: dict, cfg: EvaluateParams) -> EvaluationSet:
    """Read the index stage's tables and label the gallery (object and image level)."""
    for needed in ("gallery.parquet", "queries.parquet"):
        if not (index_dir / needed).exists():
            raise MissingInputError(f"{index_dir / needed} not found; run the index stage first")
    gallery = pd.read_parquet(index_dir / "gallery.parquet", columns=["object_id", "image_id", *BOX_COLUMNS])
    queries = pd.read_parquet(index_dir / "queries.parquet")
    gt = ground_truth(test)
    # dense class codes shared by GT and queries (category ids may be large or sparse)
    ids = [gt["category_id"].to_numpy(np.int64), queries["category_id"].to_numpy(np.int64)]
    classes = np.unique(np.concatenate(ids))
    gt_codes, q_codes = (np.searchsorted(classes, i) for i in ids)
    # Excluding same-image items shortens lists: fetch enough to still fill topk.
    per_image = int(gallery.groupby("image_id").size().max()) if len(gallery) else 0
    fetch = cfg.topk + (per_image if cfg.exclude_same_image else 0)
    return EvaluationSet(
        gallery=gallery,
        queries=queries,
        class_code=q_codes,
        lookups=relevance_lookups(gallery, gt, gt_codes, cfg.object_iou),
        masks=query_masks(queries, known_category_ids(test.categories, tasks)),
        plan=SearchPlan(cfg.topk, fetch, cfg.exclude_same_image, cfg.query_chunk),
    )


def summarize(scores: Scores, masks: dict[str, np.ndarray]) -> dict:
    """``{subset: {"queries": n, "<level>-<metric>": value}}`` of one embedding."""
    result: dict = {subset: {"queries": int(m.sum())} for subset, m in masks.items()}
    for level in LEVELS:
        for subset, values in summarize_per_query(scores.per_query[level], scores.totals[level], masks).items():
            result[subset].update({f"{level}-{k}": values[k] for k in HEADLINE})
    return result


@dataclass
class Evaluation:
    """The metrics (the JSON written by the stage) and what the pictures are drawn from."""

    metrics: dict
    data: EvaluationSet
    examples: dict  # query row -> (gallery rows, distances, relevant flags) of its top 5 (trained model)


def evaluate_index(
    index_dir: Path,
    test: ImageTable,
    tasks: dict,
    params: Params,
    *,
    embeddings: tuple[str, ...] = layout.EMBEDDINGS,
    header: dict | None = None,
) -> Evaluation:
    """Metrics of every embedding indexed in ``index_dir`` on the dataset split ``test``.

    ``index_dir`` is an index stage output (gallery.parquet, queries.parquet, <embedding>/
    gallery.faiss + queries.npy); ``test`` the COCO table of the split it indexed (its GT boxes,
    queries or not, label the gallery); ``tasks`` the training dataset's ``tasks.json``.
    ``header``: leading keys of the metrics (e.g. backbone, dataset). Metric keys:
    ``<embedding>.<subset>.<level>-<metric>``, e.g. ``model.all.O-R@1``, ``model.size_0-20.O-mAP``
    (paper mAP), ``O-mAP_std`` (standard AP). ``evaluate.examples`` queries of the trained model
    keep their top 5 for the examples sheet.
    """
    cfg = params.evaluate
    data = prepare(Path(index_dir), test, tasks, cfg)
    keep = choose_examples(data.masks, cfg.examples, params.seed)
    metrics: dict = {
        **(header or {}),
        "groups": params.groups,
        "task": params.task,
        "gallery": len(data.gallery),
        "queries": len(data.queries),
    }
    examples: dict = {}
    for name in embeddings:
        index_file = Path(index_dir) / name / "gallery.faiss"
        if not index_file.exists():
            raise MissingInputError(f"{index_file} not found; run the index stage first")
        queries = QuerySet(
            np.load(Path(index_dir) / name / "queries.npy", mmap_mode="r"),
            data.class_code,
            data.queries["image_id"].to_numpy(np.int64),
        )
        index = load_for_search(index_file, params.index)
        is_model = name == "model"
        scores = score_queries(
            index, queries, data.lookups, data.plan, keep=keep if is_model else None, desc=f"search ({name})"
        )
        examples = scores.examples if is_model else examples
        metrics[name] = summarize(scores, data.masks)
    return Evaluation(metrics, data, examples)
