"""The data stage: materialise a dataset as COCO-format image tables for train and test."""

from __future__ import annotations

import json
import logging

from stages import layout
from stages.config import Params

log = logging.getLogger(__name__)


def run(params: Params, dataset: str | None = None) -> None:
    """Write ``data/<dataset>/dataset/{split}.json`` (and the images of generated sources)."""
    from stages.data import synthetic

    name = params.dataset(dataset)
    out = layout.dataset_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    if name == "synthetic":
        cfg = params.data.synthetic
        sizes = {"train": cfg.train_images, "test": cfg.test_images}
        for split, n in sizes.items():
            coco = synthetic.generate_split(cfg, split, n, params.seed, out)
            (out / f"{split}.json").write_text(json.dumps(coco))
            log.info("data: %s split: %d images, %d objects", split, len(coco["images"]), len(coco["annotations"]))
    else:  # pragma: no cover - guarded by the parameter model
        raise ValueError(f"unknown data source {name!r}")
