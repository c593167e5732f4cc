"""The evaluate stage: object- and image-level retrieval metrics into ``metrics/*.json``.

Object level: a returned gallery object is relevant when its IoU with a ground-truth box of the
query's class is >= ``evaluate.object_iou`` (0.3); image level: any overlap (paper V-A).
Reported for all / known / unknown query classes of the configured task and for the paper's
query-size buckets (Tables III-IV), for the trained model and for the same backbone without
training (``pretrained``).  The protocol itself is :func:`stages.evaluate.protocol.evaluate_index`
(streamed over query chunks); this module only wires paths.
"""

from __future__ import annotations

import json
import logging

from stages import layout
from stages.config import Params
from stages.data.table import load_split
from stages.evaluate.protocol import HEADLINE, SIZE_BUCKETS, evaluate_index, query_masks

__all__ = ["HEADLINE", "SIZE_BUCKETS", "query_masks", "evaluate_index", "run"]
log = logging.getLogger(__name__)


def run(params: Params, backbone: str | None = None, dataset: str | None = None) -> None:
    """Metrics of ``backbone``'s model on ``dataset`` into metrics/<backbone>/<dataset>.json (+ pictures)."""
    backbone, dataset = params.backbone(backbone), params.dataset(dataset)
    tasks_file = layout.SPLITS / "tasks.json"
    if not tasks_file.exists():
        raise FileNotFoundError(f"{tasks_file} not found; run the splits stage first")
    test = load_split(layout.dataset_dir(dataset) / "test.json")
    metrics = evaluate_index(
        layout.index_dir(backbone, dataset),
        test,
        json.loads(tasks_file.read_text()),
        params,
        layout.metrics_file(backbone, dataset),
        layout.plots_dir(backbone, dataset),
        header={"backbone": backbone, "dataset": dataset},
    )
    m, p = metrics["model"]["all"], metrics["pretrained"]["all"]
    log.info(
        "evaluate: O-R@1 %.2f (pretrained %.2f), O-mAP %.2f (%.2f), I-R@1 %.2f (%.2f), I-mAP %.2f (%.2f)",
        m["O-R@1"],
        p["O-R@1"],
        m["O-mAP"],
        p["O-mAP"],
        m["I-R@1"],
        p["I-R@1"],
        m["I-mAP"],
        p["I-mAP"],
    )
