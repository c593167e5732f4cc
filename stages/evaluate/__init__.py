"""The evaluate stage: object- and image-level retrieval metrics into ``metrics/*.json``.

A dataset without any ground-truth box (a photo folder) cannot be scored: its metrics file says so,
``{"ground_truth": false, "gallery": <objects>, "queries": 0, ...}``, and its pictures carry that
message, so the DAG still runs end to end.

Object level: a returned gallery object is relevant when its IoU with a ground-truth box of the
query's class is >= ``evaluate.object_iou`` (0.3); image level: any overlap (paper V-A); under
``evaluate.labelling: max_iou`` only the box it overlaps most counts.
Reported for all / known / unknown query classes of the configured task and for the paper's
query-size buckets (Tables III-IV), for the trained model and for the same backbone without
training (``pretrained``).  The protocol is :func:`stages.evaluate.protocol.evaluate_index`
(streamed over query chunks), the pictures :func:`stages.evaluate.plots.write_pictures`; this
module wires paths.
"""

from __future__ import annotations

import json
import logging

import pandas as pd

from stages import layout
from stages.atomic import write_json, write_parquet
from stages.config import Params
from stages.errors import MissingInputError
from stages.evaluate.plots import write_pictures
from stages.evaluate.protocol import evaluate_index
from stages.tables import load_split

__all__ = ["PARAMS", "run", "without_ground_truth"]
log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = (
    "seed",
    "groups",
    "task",
    "evaluate",
    "extract.crop_size",
    "index.gpu",
    "index.ivfpq.nprobe",
    "index.hnsw.ef_search",
)


def run(params: Params, backbone: str, dataset: str) -> None:
    """Metrics of ``backbone``'s model on ``dataset`` into metrics/<backbone>/<dataset>.json (+ pictures)."""
    tasks_file = layout.SPLITS / "tasks.json"
    if not tasks_file.exists():
        raise MissingInputError(f"{tasks_file} not found; run the splits stage first")
    test = load_split(layout.dataset_dir(dataset) / "test.json")
    if test.boxes.empty:
        without_ground_truth(backbone, dataset, params)
        return
    evaluation = evaluate_index(
        layout.index_dir(backbone, dataset),
        test,
        json.loads(tasks_file.read_text()),
        params,
        header={"backbone": backbone, "dataset": dataset},
    )
    metrics = evaluation.metrics
    write_json(layout.metrics_file(backbone, dataset), metrics)
    layout.plots_dir(backbone, dataset).mkdir(parents=True, exist_ok=True)
    write_parquet(layout.per_query_file(backbone, dataset), evaluation.per_query)
    write_pictures(evaluation, test, layout.plots_dir(backbone, dataset), params.extract.crop_size)
    m, p = metrics["model"]["all"], metrics["pretrained"]["all"]
    log.info(
        "evaluate (%d queries, list of %d): O-R@1 %.2f (pretrained %.2f), O-mAP %.2f (%.2f), "
        "I-R@1 %.2f (%.2f), I-mAP %.2f (%.2f)",
        metrics["queries"],
        metrics["map_list"],
        *(v for key in ("O-R@1", "O-mAP", "I-R@1", "I-mAP") for v in (m[key] or 0.0, p[key] or 0.0)),
    )


def without_ground_truth(backbone: str, dataset: str, params: Params) -> dict:
    """The metrics file (and pictures) of a dataset without ground truth: what was indexed, no score."""
    from stages.evaluate.plots import write_without_ground_truth

    index_file = layout.index_dir(backbone, dataset) / "index.json"
    if not index_file.exists():
        raise MissingInputError(f"{index_file} not found; run the index stage first")
    info = json.loads(index_file.read_text())
    metrics = {
        "backbone": backbone,
        "dataset": dataset,
        "ground_truth": False,
        "groups": params.groups,
        "task": params.task,
        "gallery": info["gallery"],
        "queries": 0,
        "note": "no ground-truth box in the test split: nothing to score (search the index instead)",
    }
    write_json(layout.metrics_file(backbone, dataset), metrics)
    write_parquet(layout.per_query_file(backbone, dataset), pd.DataFrame({"query": pd.Series([], dtype="int64")}))
    write_without_ground_truth(
        layout.plots_dir(backbone, dataset),
        f"{dataset}: no ground truth, no metric ({info['gallery']} objects indexed)",
    )
    log.info(
        "evaluate: %s has no ground truth: wrote %s without scores", dataset, layout.metrics_file(backbone, dataset)
    )
    return metrics
