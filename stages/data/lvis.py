"""LVIS v1 val (evaluation only): one ``test`` split, LVIS's own 1,203 categories (ids and names).

``lvis_v1_val.json`` is COCO-like but its images carry no ``file_name``: each one's
``coco_url`` (``.../val2017/000000397133.jpg`` or ``.../train2017/...``) names a COCO image,
found by its basename in ``image_dirs``.  Only images whose URL folder is in ``coco_folders``
are kept (default ``val2017``: the LVIS val images from COCO train2017 are training images of
the COCO+VOC benchmark); with ``drop_unannotated`` images without any LVIS box are dropped.
Every LVIS box is a query.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.config import LvisParams
from stages.data.coco_json import to_coco
from stages.data.files import (
    IMAGE_COLUMNS,
    boxes_frame,
    clean_boxes,
    index_folders,
    load_json,
    require_path,
    resolve_images,
)
from stages.tables import DatasetError

log = logging.getLogger(__name__)

EXPECTED = "the LVIS v1 val annotations (images with coco_url, annotations, categories)"


def build(cfg: LvisParams, seed: int = 0) -> dict[str, dict]:
    """``{"test": coco dict}`` of LVIS val (deterministic: ``seed`` is unused)."""
    path = require_path(cfg.annotations, "data.lvis.annotations", "the path of lvis_v1_val.json")
    if not cfg.image_dirs:
        raise DatasetError("data.lvis.image_dirs is empty: expected the COCO image folders (e.g. coco/val2017)")
    data = load_json(path, EXPECTED)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(f"{path}: expected {EXPECTED}")
    try:
        ims, anns = data["images"], data["annotations"]
        urls = pd.Series([im.get("coco_url") or im.get("file_name") or "" for im in ims], dtype=object)
        images = pd.DataFrame(
            {
                "image_id": np.asarray([im["id"] for im in ims], np.int64),
                "width": np.asarray([im["width"] for im in ims], np.int64),
                "height": np.asarray([im["height"] for im in ims], np.int64),
            }
        )
        xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        boxes = boxes_frame(
            [a["image_id"] for a in anns],
            [a["category_id"] for a in anns],
            xywh[:, 0],
            xywh[:, 1],
            xywh[:, 2],
            xywh[:, 3],
            np.ones(len(anns), bool),
        )
        categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in data["categories"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed LVIS entry ({type(exc).__name__}: {exc}): expected {EXPECTED}") from None
    if (urls == "").any():
        raise DatasetError(f"{path}: an image has neither coco_url nor file_name: expected {EXPECTED}")
    parts = urls.str.split("/")
    basenames = parts.str[-1]
    folders = parts.str[-2].fillna("")
    images["n_source_boxes"] = images["image_id"].map(boxes["image_id"].value_counts()).fillna(0).astype(np.int64)
    keep = np.ones(len(images), bool)
    if cfg.coco_folders:
        keep &= folders.isin(cfg.coco_folders).to_numpy()
    if cfg.drop_unannotated:
        keep &= (images["n_source_boxes"] > 0).to_numpy()
    if not keep.any():
        raise DatasetError(
            f"{path}: no annotated image with a coco_url folder in data.lvis.coco_folders={list(cfg.coco_folders)}"
        )
    images, basenames = images[keep].reset_index(drop=True), basenames[keep].reset_index(drop=True)
    index = index_folders([Path(d).expanduser() for d in cfg.image_dirs], "a COCO image folder (data.lvis.image_dirs)")
    images = resolve_images(images, basenames, index, str(path))
    boxes = clean_boxes(boxes, images, "lvis")
    coco = to_coco(images[IMAGE_COLUMNS], boxes, categories)
    log.info(
        "lvis test: %d images, %d boxes, %d categories", len(coco["images"]), len(coco["annotations"]), len(categories)
    )
    return {"test": coco}
