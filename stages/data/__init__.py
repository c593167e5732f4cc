"""The data stage: materialise a dataset as COCO-format image tables for train and test."""

from __future__ import annotations

import json
import logging

from stages import layout
from stages.config import Params

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Write ``data/dataset/{train,test}.json`` (and the images of generated sources)."""
    from stages.data import synthetic

    cfg = params.data
    out = layout.DATASET
    out.mkdir(parents=True, exist_ok=True)
    if cfg.source == "synthetic":
        sizes = {"train": cfg.synthetic.train_images, "test": cfg.synthetic.test_images}
        for split, n in sizes.items():
            coco = synthetic.generate_split(cfg.synthetic, split, n, params.seed, out)
            (out / f"{split}.json").write_text(json.dumps(coco))
            log.info("data: %s split: %d images, %d objects", split, len(coco["images"]), len(coco["annotations"]))
    else:  # pragma: no cover - guarded by the parameter model
        raise ValueError(f"unknown data source {cfg.source!r}")
