"""The evaluation protocol as a function: (index dir, dataset table, tasks, params) -> metrics.

Streamed: queries are searched a chunk at a time (at most ``evaluate.query_chunk`` queries and
:data:`MAX_CHUNK_ENTRIES` ranked items); each chunk's ranking is looked up in relevance labels
prepared once per gallery (:class:`RelevanceLookup`) and reduced to per-query values (a few
floats per query, and a 21-point precision-recall curve); subsets (all / known / unknown, size
buckets) are averaged, with bootstrap intervals, at the end.  Memory is the index, the gallery's
box table, one chunk's ranking and the per-query values, whatever the number of queries.
Pictures are drawn by the stage entry (:mod:`stages.evaluate.plots`) from the returned
:class:`Evaluation`.
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
from stages.evaluate.definitions import (
    CI_KEYS,
    CI_LEVEL,
    DIAGNOSTICS,
    LEVELS,
    MAX_CHUNK_ENTRIES,
    OVER_ALL,
    OWN_IMAGE,
    PR_SUBSETS,
    SIMILARITIES,
    choose_examples,
    known_category_ids,
    level_metrics,
    query_masks,
)
from stages.metrics.bootstrap import bootstrap_ci
from stages.metrics.diagnostics import cosine_from_l2, grid_hits, mean_similarity
from stages.metrics.relevance import ANY_OVERLAP, RelevanceLookup, drop_same_image, gallery_labels, own_image_hits
from stages.metrics.retrieval import (
    PR_LEVELS,
    interpolated_precision,
    per_query_metrics,
    percent_of_all,
    reciprocal_rank,
)
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
    gallery: pd.DataFrame, gt: pd.DataFrame, class_codes: np.ndarray, object_iou: float, labelling: str = "max_iou"
) -> dict[str, RelevanceLookup]:
    """Object- and image-level relevance labels of the gallery (rule ``labelling``), prepared once.

    ``class_codes`` are the dense class codes (0..C-1) of the ``gt`` rows, in the dataset's
    annotation order (which breaks IoU ties under ``max_iou``).
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
        level: RelevanceLookup(gallery_labels(labelling, *args, iou_threshold=thr, n_classes=n_classes), g_img)
        for level, thr in (("O", object_iou), ("I", ANY_OVERLAP))
    }


def break_ties(dist: np.ndarray, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each result row by (distance, gallery row): equal distances rank the lower row first.

    FAISS does not fix the order of equidistant items; this makes a ranking with ties (duplicate
    gallery vectors) deterministic.  Empty slots (-1, infinite distance) stay last.  Rows already
    sorted by distance (what FAISS returns) are only reordered within their runs of equal
    distances: one stable sort of a nearly sorted key, 3x faster than sorting on two keys.
    """
    last = np.int64(max(int(ranked.max(initial=0)) + 1, 1))  # after every gallery row
    rows = np.where(ranked < 0, last, ranked).astype(np.int64, copy=False)
    if not np.all(dist[:, 1:] >= dist[:, :-1]):
        order = np.lexsort((rows, dist), axis=-1)
    else:
        run = np.zeros(dist.shape, np.int64)  # index of each item's run of equal distances in its row
        np.cumsum(dist[:, 1:] != dist[:, :-1], axis=1, out=run[:, 1:])
        order = np.argsort(run * (last + 1) + rows, axis=1, kind="stable")
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(ranked, order, axis=1)


@dataclass
class Scores:
    """Per-query metric values of one embedding, per level, gathered chunk by chunk."""

    per_query: dict[str, dict[str, np.ndarray]]  # level (O, I, LS) -> metric -> [Q]
    totals: dict[str, np.ndarray]  # level -> relevant items in the gallery per query
    pr: np.ndarray  # [Q, len(PR_LEVELS)] object-level interpolated precision (NaN: nothing relevant)
    # query row -> (gallery rows, distances, object-level relevance) of its top 5
    examples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class QuerySet:
    """The queries of one embedding: vectors ``[Q, d]``, dense class codes and image ids ``[Q]``,
    boxes ``[Q, 4]`` (for the similarity-grid accuracy; None leaves it out)."""

    vectors: np.ndarray
    class_code: np.ndarray
    image_id: np.ndarray
    boxes: np.ndarray | None = None


@dataclass(frozen=True)
class SearchPlan:
    """How queries are searched: ``fetch`` items per query (``map_list`` plus room for the
    dropped same-image items), the first ``map_list`` of the filtered list scored (the headline
    mAP; ``topk`` of them for mAP@topk), ``chunk`` queries at a time."""

    topk: int
    fetch: int
    exclude_same_image: bool
    chunk: int
    map_list: int | None = None  # None: all fetched items

    def __post_init__(self):
        if self.map_list is None:
            object.__setattr__(self, "map_list", self.fetch)


def search_plan(cfg: EvaluateParams, gallery_size: int, per_image: int) -> SearchPlan:
    """The plan of ``cfg`` on a gallery of ``gallery_size`` objects, at most ``per_image`` per image."""
    gallery_size = max(int(gallery_size), 1)
    map_list = min(cfg.map_list or gallery_size, gallery_size)
    fetch = min(map_list + (per_image if cfg.exclude_same_image else 0), gallery_size)
    chunk = max(1, min(cfg.query_chunk, MAX_CHUNK_ENTRIES // fetch))
    return SearchPlan(min(cfg.topk, map_list), fetch, cfg.exclude_same_image, chunk, map_list)


@dataclass(frozen=True)
class GalleryBoxes:
    """Image id and box of each gallery row (the similarity grid of an image is its proposals)."""

    image_id: np.ndarray
    boxes: np.ndarray


def score_queries(
    index,
    queries: QuerySet,
    lookups: dict[str, RelevanceLookup],
    plan: SearchPlan,
    *,
    gallery: GalleryBoxes | None = None,
    keep: np.ndarray | None = None,
    desc: str | None = None,
) -> Scores:
    """Search the queries chunk by chunk and score each chunk's ranking (vectorised per chunk).

    Per query and level: the metrics of :func:`per_query_metrics` on the filtered list (same-image
    items dropped with ``plan.exclude_same_image``), cut to ``plan.map_list``; image level adds the
    own-image reciprocal rank, always on the unfiltered list; ``LS`` holds the Learn-and-Search
    diagnostics (``gallery`` and query boxes needed for SGA).  ``keep``: query rows whose top-5
    (rows, distances, object-level relevance) are kept for the examples sheet.
    """
    n_q = len(queries.vectors)
    fetch = max(1, min(plan.fetch, index.ntotal))
    width = min(plan.map_list, fetch)
    keep_set = {int(q) for q in (keep if keep is not None else [])}
    scores = Scores({}, {level: np.zeros(n_q, np.int64) for level in lookups}, np.full((n_q, len(PR_LEVELS)), np.nan))
    g_img = lookups["I"].gallery_image if "I" in lookups else None
    starts = range(0, n_q, plan.chunk)
    for s in tqdm(starts, desc=desc, unit="chunk", disable=desc is None or len(starts) < 2):
        e = min(s + plan.chunk, n_q)
        chunk = np.ascontiguousarray(queries.vectors[s:e], dtype=np.float32)
        dist, ranked = break_ties(*index.search(chunk, fetch))
        q_img, q_cls = queries.image_id[s:e], queries.class_code[s:e]
        values: dict[str, dict[str, np.ndarray]] = {"LS": {}}
        if g_img is not None:  # the authors' I-mAP: own image, unfiltered list
            own = own_image_hits(ranked[:, :width], q_img, g_img, lookups["I"].labelled)
            values["I"] = {OWN_IMAGE: reciprocal_rank(own)}
        if gallery is not None and queries.boxes is not None:
            values["LS"]["SGA"] = grid_hits(
                ranked[:, :width], q_img, queries.boxes[s:e], gallery.image_id, gallery.boxes
            )
        if plan.exclude_same_image:
            shown, shown_dist = drop_same_image(ranked, q_img, next(iter(lookups.values())).gallery_image, dist)
        else:
            shown, shown_dist = ranked, dist
        shown, shown_dist = shown[:, :width], shown_dist[:, :width]
        for level, lookup in lookups.items():  # two levels
            rel = lookup.relevant(shown, q_cls)
            total = lookup.totals(q_cls, q_img if plan.exclude_same_image else None)
            values.setdefault(level, {}).update(per_query_metrics(rel, total, short=plan.topk))
            scores.totals[level][s:e] = total
            if level == "O":
                scores.pr[s:e] = interpolated_precision(rel, total)
                sim = np.where(shown >= 0, cosine_from_l2(shown_dist), np.nan)
                pos, neg = mean_similarity(sim, rel), mean_similarity(sim, (shown >= 0) & ~rel)
                values["LS"].update(pos_sim=pos, neg_sim=neg, sim_gap=pos - neg)
                _keep_examples(scores.examples, keep_set, s, e, shown_dist, shown, rel)
        for level, metrics in values.items():
            store = scores.per_query.setdefault(level, {})
            for key, v in metrics.items():
                store.setdefault(key, np.full(n_q, np.nan))[s:e] = v
    return scores


def _keep_examples(examples: dict, keep: set[int], start: int, end: int, dist, shown, rel) -> None:
    """The top-5 (gallery rows, distances, relevance) of the kept queries of one chunk."""
    for q in (q for q in keep if start <= q < end):  # a few example queries
        row = shown[q - start, :5]
        examples[q] = (row, np.where(row >= 0, dist[q - start, :5], np.nan), rel[q - start, :5])


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
    # Excluding same-image items shortens lists: fetch enough to still fill the scored list.
    per_image = int(gallery.groupby("image_id").size().max()) if len(gallery) else 0
    return EvaluationSet(
        gallery=gallery,
        queries=queries,
        class_code=q_codes,
        lookups=relevance_lookups(gallery, gt, gt_codes, cfg.object_iou, cfg.labelling),
        masks=query_masks(queries, known_category_ids(test.categories, tasks)),
        plan=search_plan(cfg, len(gallery), per_image),
    )


def _mean(values: np.ndarray, scale: float) -> float | None:
    """Mean of the finite values times ``scale``, rounded to 4 decimals; None when there are none."""
    values = values[~np.isnan(values)]
    return round(float(values.mean()) * scale, 4) if values.size else None


def _interval(values: np.ndarray, resamples: int, seed: int) -> list[float] | None:
    """The 95 % bootstrap interval of the mean of ``values`` (percent), or None (no query / no resample)."""
    got = bootstrap_ci(values * 100.0, resamples, seed, CI_LEVEL) if resamples else None
    return None if got is None else [round(got[0], 4), round(got[1], 4)]


def summarize(scores: Scores, masks: dict[str, np.ndarray], topk: int, resamples: int = 0, seed: int = 0) -> dict:
    """``{subset: {"queries": n, "<level>-<metric>": value, "<key>_ci95": [low, high]}}`` of one embedding.

    Rates are percent; the ``LS-*_sim`` similarities are mean cosines.  Each subset is averaged
    over its own queries; ``known_over_all`` / ``unknown_over_all`` divide the subset's sum by all
    queries (the authors' known / unknown).  Bootstrap intervals (``resamples`` > 0, seeded by
    ``seed``) for :data:`CI_KEYS`.
    """
    columns = {
        f"{level}-{name}": scores.per_query[level][name] for level in LEVELS for name in level_metrics(level, topk)
    }
    columns |= {f"LS-{name}": scores.per_query["LS"][name] for name in DIAGNOSTICS if name in scores.per_query["LS"]}
    result: dict = {}
    for subset, mask in masks.items():
        entry: dict = {"queries": int(mask.sum())}
        for key, values in columns.items():
            entry[key] = _mean(values[mask], 1.0 if key.removeprefix("LS-") in SIMILARITIES else 100.0)
            if key in CI_KEYS and resamples:
                entry[f"{key}_ci95"] = _interval(values[mask], resamples, seed)
        result[subset] = entry
    for name, subset in OVER_ALL.items():
        entry = {"queries": int(masks[subset].sum()), "of_queries": int(masks["all"].sum())}
        entry |= {k: percent_of_all(v, masks[subset]) for k, v in columns.items() if not k.startswith("LS-")}
        result[name] = entry
    return result


def pr_curves(scores: Scores, masks: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
    """Mean interpolated precision at each of :data:`PR_LEVELS` per subset of :data:`PR_SUBSETS`
    (queries with nothing relevant in the gallery left out; None for an empty subset)."""
    out = {}
    for subset in PR_SUBSETS:
        rows = scores.pr[masks[subset]]
        rows = rows[~np.isnan(rows).any(axis=1)]
        out[subset] = [round(float(v), 6) for v in rows.mean(axis=0)] if len(rows) else [None] * len(PR_LEVELS)
    return out


def per_query_table(data: EvaluationSet, scores: dict[str, Scores], topk: int) -> pd.DataFrame:
    """One row per query (image, class, area) and a float32 column ``<embedding>.<level>-<metric>``
    per headline value: what a paired comparison of two runs on the same queries needs."""
    table = {
        "query": np.arange(len(data.queries), dtype=np.int64),
        "image_id": data.queries["image_id"].to_numpy(np.int64),
        "category_id": data.queries["category_id"].to_numpy(np.int64),
        "area": data.queries["area"].to_numpy(np.float64),
    }
    for name, sc in scores.items():
        for level in LEVELS:
            for metric in level_metrics(level, topk):
                table[f"{name}.{level}-{metric}"] = sc.per_query[level][metric].astype(np.float32)
        for metric, values in sc.per_query["LS"].items():
            table[f"{name}.LS-{metric}"] = values.astype(np.float32)
    return pd.DataFrame(table)


@dataclass
class Evaluation:
    """The metrics (the JSON written by the stage) and what the pictures are drawn from."""

    metrics: dict
    data: EvaluationSet
    examples: dict  # query row -> (gallery rows, distances, relevant flags) of its top 5 (trained model)
    per_query: pd.DataFrame | None = None  # see per_query_table
    pr: dict = field(default_factory=dict)  # embedding -> subset -> mean interpolated precision per PR_LEVELS


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
    (paper mAP over ``evaluate.map_list``), ``O-mAP@100`` (over the top 100), ``O-mAP_std``
    (standard AP), ``I-MRR_own_image`` (the authors' I-mAP), ``LS-SGA`` (Learn and Search), and
    ``<key>_ci95``.  ``evaluate.examples`` queries of the trained model keep their top 5 for the
    examples sheet.
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
        "map_list": data.plan.map_list,
        "labelling": cfg.labelling,
    }
    gallery = GalleryBoxes(data.gallery["image_id"].to_numpy(np.int64), data.gallery[BOX_COLUMNS].to_numpy(np.float64))
    examples: dict = {}
    all_scores: dict[str, Scores] = {}
    for name in embeddings:
        index_file = Path(index_dir) / name / "gallery.faiss"
        if not index_file.exists():
            raise MissingInputError(f"{index_file} not found; run the index stage first")
        queries = QuerySet(
            np.load(Path(index_dir) / name / "queries.npy", mmap_mode="r"),
            data.class_code,
            data.queries["image_id"].to_numpy(np.int64),
            data.queries[BOX_COLUMNS].to_numpy(np.float64),
        )
        index = load_for_search(index_file, params.index)
        is_model = name == "model"
        scores = score_queries(
            index,
            queries,
            data.lookups,
            data.plan,
            gallery=gallery,
            keep=keep if is_model else None,
            desc=f"search ({name})",
        )
        examples = scores.examples if is_model else examples
        metrics[name] = summarize(scores, data.masks, data.plan.topk, cfg.bootstrap, params.seed)
        all_scores[name] = scores
    pr = {name: pr_curves(sc, data.masks) for name, sc in all_scores.items()}
    return Evaluation(metrics, data, examples, per_query_table(data, all_scores, data.plan.topk), pr)
