"""The streamed evaluation protocol: equal to an in-memory evaluation, known/unknown by name, pictures."""

import json

import cv2
import faiss
import numpy as np
import pandas as pd
import pytest

from stages.config import Params
from stages.evaluate.definitions import SIZE_BUCKETS, choose_examples, known_category_ids, query_masks
from stages.evaluate.plots import write_pictures
from stages.evaluate.protocol import QuerySet, Scores, SearchPlan, break_ties, evaluate_index, ground_truth
from stages.evaluate.protocol import summarize as summarize_scores
from stages.metrics.diagnostics import grid_hits, mean_similarity
from stages.metrics.relevance import ANY_OVERLAP, drop_same_image, gallery_labels, own_image_hits, relevance_matrix
from stages.metrics.retrieval import interpolated_precision, per_query_metrics, reciprocal_rank
from stages.tables import ImageTable

NAMES = ["cat", "dog", "car", "boat", "kite"]


def _dataset(tmp_path, rng, n_images=12, n_gt=40, n_gallery=300, d=16, with_images=False):
    """A COCO-like split, an index dir with both embeddings, and its queries (GT boxes not marked query: false)."""
    size = 100
    image_ids = np.arange(100, 100 + n_images) * 3  # not contiguous
    paths = []
    for i in image_ids:
        p = tmp_path / f"im{i}.png"
        if with_images:
            cv2.imwrite(str(p), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        paths.append(str(p))
    images = pd.DataFrame({"image_id": image_ids, "path": paths, "width": size, "height": size})
    xy = rng.uniform(0, 70, (n_gt, 2))
    wh = rng.uniform(4, 40, (n_gt, 2))
    cat_ids = np.array([11, 22, 33, 44, 55])
    gt = pd.DataFrame(
        {
            "image_id": rng.choice(image_ids, n_gt),
            "category_id": rng.choice(cat_ids, n_gt),
            "x1": xy[:, 0],
            "y1": xy[:, 1],
            "x2": xy[:, 0] + wh[:, 0],
            "y2": xy[:, 1] + wh[:, 1],
        }
    )
    gt["query"] = rng.random(n_gt) > 0.2
    categories = pd.DataFrame({"category_id": cat_ids, "name": NAMES})
    table = ImageTable(images=images, boxes=gt.drop(columns="query").assign(query=gt["query"]), categories=categories)

    # gallery: jittered copies of GT boxes (relevant at some level) plus random boxes
    src = rng.integers(0, n_gt, n_gallery // 2)
    jitter = rng.normal(0, 3, (len(src), 4))
    g_box = np.clip(gt[["x1", "y1", "x2", "y2"]].to_numpy()[src] + jitter, 0, size)
    g_box[:, 2:] = np.maximum(g_box[:, 2:], g_box[:, :2] + 1)
    r_xy = rng.uniform(0, 80, (n_gallery - len(src), 2))
    r_box = np.concatenate([r_xy, r_xy + rng.uniform(2, 20, r_xy.shape)], axis=1)
    gallery = pd.DataFrame(np.concatenate([g_box, r_box]), columns=["x1", "y1", "x2", "y2"])
    gallery.insert(0, "image_id", np.concatenate([gt["image_id"].to_numpy()[src], rng.choice(image_ids, len(r_box))]))
    gallery.insert(0, "object_id", np.arange(n_gallery) + 1000)

    queries = gt[gt["query"]].drop(columns="query").reset_index(drop=True)
    queries["area"] = (queries["x2"] - queries["x1"]) * (queries["y2"] - queries["y1"])
    out = tmp_path / "index"
    out.mkdir()
    gallery.to_parquet(out / "gallery.parquet", index=False)
    queries.to_parquet(out / "queries.parquet", index=False)
    # class prototypes: queries near the gallery copies of their class
    protos = rng.normal(size=(100, d)).astype(np.float32)
    g_vec = protos[rng.integers(0, 100, n_gallery)] + rng.normal(0, 0.5, (n_gallery, d)).astype(np.float32)
    g_vec[: len(src)] = protos[gt["category_id"].to_numpy()[src] % 100] + rng.normal(0, 0.8, (len(src), d))
    g_vec[5] = g_vec[6]  # an exact tie
    g_vec /= np.linalg.norm(g_vec, axis=1, keepdims=True)  # unit vectors, as the index stage writes
    vectors = {}
    for name in ("model", "pretrained"):
        (out / name).mkdir()
        q_vec = protos[queries["category_id"].to_numpy() % 100] + rng.normal(
            0, 0.8 if name == "model" else 2.0, (len(queries), d)
        )
        q_vec = (q_vec / np.linalg.norm(q_vec, axis=1, keepdims=True)).astype(np.float32)
        index = faiss.IndexFlatL2(d)
        index.add(g_vec)
        faiss.write_index(index, str(out / name / "gallery.faiss"))
        np.save(out / name / "queries.npy", q_vec)
        vectors[name] = (index, q_vec)
    return table, out, gallery, queries, vectors


def _params(**evaluate):
    return Params.model_validate({"evaluate": {"topk": 20, "bootstrap": 200, **evaluate}})


def _in_memory(table, gallery, queries, vectors, tasks, params):
    """The reference: one search of all queries, the pure metric functions on the whole ranking,
    then the protocol's subset summary."""
    cfg = params.evaluate
    gt = ground_truth(table)
    args = (
        gallery["image_id"].to_numpy(),
        gallery[["x1", "y1", "x2", "y2"]].to_numpy(),
        gt["image_id"].to_numpy(),
        gt[["x1", "y1", "x2", "y2"]].to_numpy(),
        gt["category_id"].to_numpy(),
    )
    labels = {
        "O": gallery_labels(cfg.labelling, *args, iou_threshold=cfg.object_iou, n_classes=56),
        "I": gallery_labels(cfg.labelling, *args, iou_threshold=ANY_OVERLAP, n_classes=56),
    }
    foreground = labels["I"].getnnz(axis=1) > 0
    masks = query_masks(queries, known_category_ids(table.categories, tasks))
    n_g = len(gallery)
    map_list = min(cfg.map_list or n_g, n_g)
    fetch = min(map_list + (int(gallery.groupby("image_id").size().max()) if cfg.exclude_same_image else 0), n_g)
    q_img, g_img = queries["image_id"].to_numpy(), gallery["image_id"].to_numpy()
    q_box, g_box = queries[["x1", "y1", "x2", "y2"]].to_numpy(), gallery[["x1", "y1", "x2", "y2"]].to_numpy()
    out = {}
    for name, (index, q_vec) in vectors.items():
        dist, ranked = break_ties(*index.search(q_vec, fetch))
        per_query = {
            "I": {"MRR_own_image": reciprocal_rank(own_image_hits(ranked[:, :map_list], q_img, g_img, foreground))},
            "LS": {"SGA": grid_hits(ranked[:, :map_list], q_img, q_box, g_img, g_box)},
        }
        shown, shown_dist = drop_same_image(ranked, q_img, g_img, dist) if cfg.exclude_same_image else (ranked, dist)
        totals = {}
        for level, lab in labels.items():
            rel, total = relevance_matrix(
                ranked, queries["category_id"].to_numpy(), lab, q_img, g_img, cfg.exclude_same_image
            )
            rel = rel[:, :map_list]
            per_query.setdefault(level, {}).update(per_query_metrics(rel, total, short=min(cfg.topk, map_list)))
            totals[level] = total
            if level == "O":
                sim = np.where(shown >= 0, 1 - shown_dist / 2, np.nan)[:, :map_list]
                pos, neg = mean_similarity(sim, rel), mean_similarity(sim, (shown[:, :map_list] >= 0) & ~rel)
                per_query["LS"].update(pos_sim=pos, neg_sim=neg, sim_gap=pos - neg)
                pr = interpolated_precision(rel, total)
        scores = Scores(per_query, totals, pr)
        out[name] = summarize_scores(scores, masks, min(cfg.topk, map_list), cfg.bootstrap, params.seed)
    return out


CASES = [
    {"exclude_same_image": True},
    {"exclude_same_image": False},
    {"exclude_same_image": True, "labelling": "multi_label"},
    {"exclude_same_image": False, "map_list": 50},
]


@pytest.mark.parametrize("case", CASES)
def test_streamed_equals_in_memory(tmp_path, case):
    rng = np.random.default_rng(3)
    table, index_dir, gallery, queries, vectors = _dataset(tmp_path, rng)
    tasks = {"known": [1, 2], "known_names": ["cat", "car", "kite"]}
    params = _params(query_chunk=7, **case)
    evaluation = evaluate_index(index_dir, table, tasks, params)
    got = evaluation.metrics
    assert json.loads(json.dumps(got)) == got  # JSON-ready as the stage writes it
    assert got["gallery"] == len(gallery) and got["queries"] == len(queries) < len(
        table.boxes
    )  # query: false boxes skipped
    assert got["map_list"] == min(case.get("map_list", 36000), len(gallery))
    expected = _in_memory(table, gallery, queries, vectors, tasks, params)
    for name in ("model", "pretrained"):
        assert got[name] == expected[name]
    assert (
        got["model"]["all"]["O-R@1"] > 0
        and got["model"]["known"]["queries"] > 0
        and got["model"]["unknown"]["queries"] > 0
    )
    # one chunk gives the same numbers as chunks of 7
    assert evaluate_index(index_dir, table, tasks, _params(query_chunk=10_000, **case)).metrics == got


def test_chunks_shrink_for_long_lists(tmp_path, monkeypatch):
    from stages.evaluate import protocol

    rng = np.random.default_rng(3)
    table, index_dir, *_ = _dataset(tmp_path, rng)
    tasks = {"known": [1, 2], "known_names": ["cat"]}
    whole = evaluate_index(index_dir, table, tasks, _params())
    assert whole.data.plan.chunk == 4096 and whole.data.plan.map_list == 300  # the whole gallery
    monkeypatch.setattr(protocol, "MAX_CHUNK_ENTRIES", 1000)  # 1000 // 300 + ... -> 2 queries per chunk
    small = evaluate_index(index_dir, table, tasks, _params())
    assert small.data.plan.chunk == 1000 // small.data.plan.fetch
    assert small.metrics == whole.metrics


def test_paper_definitions_and_their_variants(tmp_path):
    rng = np.random.default_rng(3)
    table, index_dir, *_ = _dataset(tmp_path, rng)
    tasks = {"known": [1, 2], "known_names": ["cat", "car", "kite"]}
    evaluation = evaluate_index(index_dir, table, tasks, _params())
    m = evaluation.metrics["model"]
    a = m["all"]
    # the long-list mAP counts relevant items deep in the list: below the top-20 truncation
    assert a["O-mAP"] < a["O-mAP@20"] and a["I-mAP"] < a["I-mAP@20"]
    # with the list cut to 20, the headline mAP is the truncated one
    short = evaluate_index(index_dir, table, tasks, _params(map_list=20)).metrics["model"]["all"]
    assert short["O-mAP"] == short["O-mAP@20"] == a["O-mAP@20"] and short["O-R@1"] == a["O-R@1"]
    # the authors' known / unknown: shares of all queries that add up to the overall value
    for key in ("O-R@1", "O-mAP", "I-R@1", "I-mAP"):
        ko, uo = m["known_over_all"][key], m["unknown_over_all"][key]
        assert ko + uo == pytest.approx(a[key], abs=2e-4)
        n_all, n_known = a["queries"], m["known"]["queries"]
        assert ko == pytest.approx(m["known"][key] * n_known / n_all, abs=2e-4)
    # every headline key has its interval around it
    for subset in ("all", "known", "unknown", *SIZE_BUCKETS):
        for key in ("O-R@1", "O-mAP", "I-R@1", "I-mAP", "I-MRR_own_image"):
            if m[subset]["queries"]:
                low, high = m[subset][f"{key}_ci95"]
                assert low <= m[subset][key] + 1e-9 and m[subset][key] <= high + 1e-9
    # no interval without resamples
    assert "O-R@1_ci95" not in evaluate_index(index_dir, table, tasks, _params(bootstrap=0)).metrics["model"]["all"]
    # the diagnostics: rates in percent, similarities as cosines
    assert 0 <= a["LS-SGA"] <= 100 and -1 <= a["LS-neg_sim"] < a["LS-pos_sim"] <= 1
    assert a["LS-sim_gap"] == pytest.approx(a["LS-pos_sim"] - a["LS-neg_sim"], abs=0.05)
    # the per-query table reproduces the means; the PR curve starts high and falls
    table_q = evaluation.per_query
    assert len(table_q) == a["queries"] and table_q["model.O-R@1"].mean() * 100 == pytest.approx(a["O-R@1"], abs=1e-3)
    assert table_q["pretrained.I-mAP"].mean() * 100 == pytest.approx(
        evaluation.metrics["pretrained"]["all"]["I-mAP"], abs=1e-3
    )
    curve = evaluation.pr["model"]["all"]
    assert len(curve) == 21 and curve[0] >= curve[10] >= curve[-1] and curve[0] > 0.5


def test_known_classes_matched_by_name_across_datasets():
    # another dataset: different ids, partly the same names
    cats = pd.DataFrame({"category_id": [1, 2, 3, 4], "name": ["dog", "zebra", "cat", "kite"]})
    tasks = {"known": [11, 33], "known_names": ["cat", "car", "kite"]}
    assert sorted(known_category_ids(cats, tasks).tolist()) == [3, 4]
    # an old tasks.json without names falls back to the ids
    assert known_category_ids(cats, {"known": [2], "known_names": []}).tolist() == []  # names decide, not ids
    q = pd.DataFrame({"category_id": [1, 3, 4, 2], "area": [100.0] * 4})
    m = query_masks(q, known_category_ids(cats, tasks))
    assert m["known"].tolist() == [False, True, True, False] and m["unknown"].tolist() == [True, False, False, True]


def test_ground_truth_keeps_non_query_boxes_and_clips():
    images = pd.DataFrame({"image_id": [1], "path": ["x"], "width": [50], "height": [40]})
    boxes = pd.DataFrame(
        {
            "image_id": [1, 1],
            "category_id": [3, 4],
            "x1": [-5.0, 10],
            "y1": [0.0, 10],
            "x2": [60.0, 20],
            "y2": [50.0, 20],
            "query": [True, False],
        }
    )
    gt = ground_truth(ImageTable(images, boxes, pd.DataFrame({"category_id": [3, 4], "name": ["a", "b"]})))
    assert len(gt) == 2 and gt[["x1", "y1", "x2", "y2"]].to_numpy()[0].tolist() == [0, 0, 50, 40]


def test_break_ties_orders_equal_distances_by_row():
    dist = np.array([[0.2, 0.2, 0.1, np.finfo(np.float32).max]], np.float32)
    ranked = np.array([[8, 2, 5, -1]])
    d, r = break_ties(dist, ranked)
    assert r.tolist() == [[5, 2, 8, -1]] and d[0, :3].tolist() == pytest.approx([0.1, 0.2, 0.2])


def test_break_ties_of_sorted_rows_equals_a_two_key_sort():
    """FAISS-sorted rows with many ties and empty tail slots: the run-wise fast path gives the
    (distance, row) order of a plain two-key sort."""
    rng = np.random.default_rng(3)
    dist = np.sort(rng.integers(0, 6, (7, 40)).astype(np.float32), axis=1)
    ranked = np.stack([rng.permutation(100)[:40] for _ in range(7)])
    dist[2, 30:], ranked[2, 30:] = np.inf, -1  # fewer results than asked
    d, r = break_ties(dist, ranked)
    order = np.lexsort((np.where(ranked < 0, 10**9, ranked), dist), axis=-1)
    np.testing.assert_array_equal(r, np.take_along_axis(ranked, order, axis=1))
    np.testing.assert_array_equal(d, np.take_along_axis(dist, order, axis=1))
    assert r[2, 30:].tolist() == [-1] * 10


def test_choose_examples_spread_over_buckets():
    side = np.array([5, 6, 7, 25, 26, 45, 80, 150, 160, 170])
    masks = query_masks(pd.DataFrame({"category_id": np.zeros(10, int), "area": side**2.0}), [])
    picked = choose_examples(masks, 5, seed=0)
    assert len(set(picked.tolist())) == 5
    buckets = {name for name in SIZE_BUCKETS for q in picked if masks[name][q]}
    assert buckets == set(SIZE_BUCKETS)  # one per bucket
    assert choose_examples(masks, 5, seed=0).tolist() == picked.tolist()  # seeded
    assert len(choose_examples(masks, 50, seed=1)) == 10


def test_pictures(tmp_path):
    rng = np.random.default_rng(5)
    table, index_dir, *_ = _dataset(tmp_path, rng, with_images=True)
    plots = tmp_path / "plots"
    evaluation = evaluate_index(index_dir, table, {"known": [11], "known_names": []}, _params(examples=4))
    write_pictures(evaluation, table, plots, crop_size=64)
    metrics = evaluation.metrics
    csv = pd.read_csv(plots / "buckets.csv")
    assert csv["bucket"].tolist() == list(SIZE_BUCKETS)
    assert csv["queries"].tolist() == [metrics["model"][b]["queries"] for b in SIZE_BUCKETS]
    for subset in ("all", *SIZE_BUCKETS):
        pr = pd.read_csv(plots / "pr" / f"{subset}.csv")
        assert pr.columns.tolist() == ["recall", "precision", "pretrained"] and len(pr) == 21
        expected = [np.nan if v is None else v for v in evaluation.pr["model"][subset]]  # None: a bucket without query
        assert pr["precision"].tolist() == pytest.approx(expected, nan_ok=True)
    for png in ("buckets.png", "examples.png", "pr.png"):
        image = cv2.imread(str(plots / png))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 500


def test_tied_distances_rank_lower_row_first_hand_computed():
    import scipy.sparse as sp

    from stages.evaluate.protocol import score_queries
    from stages.metrics.relevance import RelevanceLookup

    # rows 1 and 3 are the same vector (a tie), row 3 relevant and row 1 not; row 0 far, relevant
    g = np.array([[5, 5], [1, 0], [9, 9], [1, 0]], np.float32)
    index = faiss.IndexFlatL2(2)
    index.add(g)
    labels = sp.csr_matrix(np.array([[1], [0], [0], [1]], bool))
    lookups = {"O": RelevanceLookup(labels, np.arange(4))}
    plan = SearchPlan(topk=4, fetch=4, exclude_same_image=False, chunk=1)
    queries = QuerySet(np.array([[0, 0], [9, 9]], np.float32), np.array([0, 0]), np.array([-1, -1]))
    sc = score_queries(index, queries, lookups, plan)
    pq = sc.per_query["O"]
    # query 0 ranking: 1 (tie, lower row first), 3, 0, 2 -> rel [0, 1, 1, 0];
    # query 1: 2, 0, then tie 1, 3 -> [0, 1, 0, 1]
    assert pq["R@1"].tolist() == [0, 0] and pq["R@5"].tolist() == [1, 1]
    np.testing.assert_allclose(pq["mAP"], [(1 / 2 + 2 / 3) / 2, (1 / 2 + 2 / 4) / 2])
    np.testing.assert_allclose(pq["mAP_std"], [(1 / 2 + 2 / 3) / 2, (1 / 2 + 2 / 4) / 2])  # both relevant returned
    # a class with no relevant item in the gallery: paper AP 0, standard AP undefined (NaN, left out of means)
    sc = score_queries(index, QuerySet(np.array([[0, 0]], np.float32), np.array([5]), np.array([-1])), lookups, plan)
    assert sc.per_query["O"]["mAP"].tolist() == [0.0] and np.isnan(sc.per_query["O"]["mAP_std"][0])
