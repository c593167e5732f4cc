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
from pathlib import Path

from stages import layout
from stages.config import Params
from stages.data.table import load_split
from stages.evaluate.protocol import HEADLINE, SIZE_BUCKETS, evaluate_index, query_masks

__all__ = ["HEADLINE", "SIZE_BUCKETS", "query_masks", "evaluate_index", "run", "output_paths"]
log = logging.getLogger(__name__)


def output_paths() -> tuple[Path, Path]:
    """(metrics JSON, plots folder) of the evaluation; one place to change when the layout moves."""
    return layout.METRICS / "retrieval.json", layout.METRICS / "plots"


def run(params: Params) -> None:
    tasks_file = layout.SPLITS / "tasks.json"
    if not tasks_file.exists():
        raise FileNotFoundError(f"{tasks_file} not found; run the splits stage first")
    metrics_path, plots_dir = output_paths()
    metrics = evaluate_index(
        layout.INDEX, load_split(layout.DATASET / "test.json"), json.loads(tasks_file.read_text()), params, metrics_path, plots_dir
    )
    m, p = metrics["model"]["all"], metrics["pretrained"]["all"]
    log.info(
        "evaluate: O-R@1 %.2f (pretrained %.2f), O-mAP %.2f (%.2f), I-R@1 %.2f (%.2f), I-mAP %.2f (%.2f)",
        m["O-R@1"], p["O-R@1"], m["O-mAP"], p["O-mAP"], m["I-R@1"], p["I-R@1"], m["I-mAP"], p["I-mAP"],
    )
