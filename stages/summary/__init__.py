"""The summary stage: one backbone's metrics over every evaluated dataset (universal-embedding style).

The universal-embedding benchmark (UnED, seed 003) reports R@1 and mMP@5 per dataset and their
unweighted mean over the datasets (a mean of per-dataset means, not a pool of their queries).
This stage reads ``metrics/<backbone>/<dataset>.json`` of every dataset in ``datasets`` and writes
``metrics/summary/<backbone>.json`` (a DVC metric) and ``metrics/summary/<backbone>.png`` (the
per-dataset table).  It lives beside, not inside, ``metrics/<backbone>/``: DVC can only depend on
that folder as a whole (the dataset list is a parameter), and a stage cannot write into its own dep.
"""

from __future__ import annotations

import json
import logging

from stages import layout
from stages.atomic import write_json
from stages.config import Params
from stages.errors import MissingInputError
from stages.summary.table import SUMMARY_KEYS, summarize_datasets, write_table

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("datasets",)


def run(params: Params, backbone: str) -> None:
    """The mean over ``datasets`` of ``backbone``'s R@1 and mMP@5 into metrics/summary/<backbone>.json (+ .png)."""
    per_dataset = {}
    for dataset in params.datasets:
        path = layout.metrics_file(backbone, dataset)
        if not path.exists():
            raise MissingInputError(f"{path} not found; run the evaluate stage of {backbone} on {dataset} first")
        per_dataset[dataset] = json.loads(path.read_text())
    summary = summarize_datasets(backbone, per_dataset)
    out = layout.summary_file(backbone)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, summary)
    write_table(summary, out.with_suffix(".png"))
    mean = summary["model"]["mean"]
    log.info(
        "summary over %d dataset(s): %s",
        len(per_dataset),
        ", ".join(f"{k} {mean[k]:.2f}" if mean[k] is not None else f"{k} -" for k in SUMMARY_KEYS),
    )
