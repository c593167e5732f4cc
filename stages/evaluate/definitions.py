"""What the evaluation reports: levels, headline metrics, query subsets (paper V-A, Tables II-IV).

One place for the names that the protocol computes, the metrics JSON keys and the pictures use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEVELS = ("O", "I")  # object level (IoU >= evaluate.object_iou), image level (any overlap)
# Per level: R@k and mMP@5 on the first ranks, mAP and mAP_std over the long list (evaluate.map_list),
# mAP@<topk> over the first evaluate.topk items (see level_metrics).
HEADLINE = ("R@1", "R@5", "R@10", "mAP", "mAP_std", "mMP@5")
OWN_IMAGE = "MRR_own_image"  # image level only: the authors' I-mAP (reciprocal rank of the query's own image)
DIAGNOSTICS = ("SGA", "pos_sim", "neg_sim", "sim_gap")  # Learn-and-Search, keys LS-<name>
SIMILARITIES = ("pos_sim", "neg_sim", "sim_gap")  # cosine similarities, reported as they are (not percent)
# keys with a 95 % bootstrap interval (<key>_ci95: [low, high]): the paper's four columns (Table II)
# and the authors' own-image I-mAP
CI_KEYS = ("O-R@1", "O-mAP", "I-R@1", "I-mAP", f"I-{OWN_IMAGE}")
CI_LEVEL = 0.95
# known / unknown as the authors' tables count them: the subset's sum over ALL queries (known + unknown = all)
OVER_ALL = {"known_over_all": "known", "unknown_over_all": "unknown"}
# largest [queries, list] ranking held at once: the query chunk shrinks for long lists (memory bound)
MAX_CHUNK_ENTRIES = 1 << 22
# Query-size buckets of the paper's Tables III-IV, by sqrt(box area) in pixels.
SIZE_BUCKETS = {
    "size_0-20": (0, 20),
    "size_20-30": (20, 30),
    "size_30-60": (30, 60),
    "size_60-100": (60, 100),
    "size_100+": (100, np.inf),
}
BUCKET_COLUMNS = ("O-R@1", "O-mAP", "I-R@1", "I-mAP")  # the per-bucket table and bars
PR_SUBSETS = ("all", *SIZE_BUCKETS)  # the precision-recall curves (object level)


def level_metrics(level: str, topk: int) -> tuple[str, ...]:
    """The metric names of one level in the metrics JSON (``<level>-<name>``), in order."""
    names = ("R@1", "R@5", "R@10", "mAP", f"mAP@{int(topk)}", "mAP_std", "mMP@5")
    return (*names, OWN_IMAGE) if level == "I" else names


def known_category_ids(categories: pd.DataFrame, tasks: dict) -> np.ndarray:
    """Ids of this dataset's categories whose NAME is a known class of the training task
    (``tasks.json`` ``known_names``), so any dataset is evaluated against the task split of the
    dataset the model was trained on."""
    names = set(tasks["known_names"])
    return categories.loc[categories["name"].isin(names), "category_id"].to_numpy(np.int64)


def query_masks(queries: pd.DataFrame, known_ids) -> dict[str, np.ndarray]:
    """all / known / unknown classes, and the paper's query-size buckets."""
    known = queries["category_id"].isin(list(known_ids)).to_numpy()
    side = np.sqrt(queries["area"].to_numpy(np.float64))
    masks = {"all": np.ones(len(queries), bool), "known": known, "unknown": ~known}
    masks.update({name: (side >= lo) & (side < hi) for name, (lo, hi) in SIZE_BUCKETS.items()})
    return masks


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
