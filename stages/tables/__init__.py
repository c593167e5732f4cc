"""The dataset interchange: a COCO-format JSON per split, read into pandas tables.

Every source (the synthetic scenes, COCO, VOC, ...) materialises ``data/<dataset>/dataset/<split>.json``
with ``images`` (id, file_name, width, height), ``annotations`` (image_id, category_id,
bbox in COCO xywh) and ``categories`` (id, name).  ``file_name`` is relative to the
JSON's folder or absolute, so real datasets are referenced in place, never copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class ImageTable:
    images: pd.DataFrame  # image_id, path (absolute), width, height, signature ('' unless a photo folder)
    boxes: pd.DataFrame  # image_id, category_id, x1, y1, x2, y2, query (ground truth)
    categories: pd.DataFrame  # category_id, name

    def box_array(self) -> np.ndarray:
        return self.boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)


def load_split(path: str | Path) -> ImageTable:
    """Read one split's COCO-format JSON; file names are resolved to absolute paths."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}; run the data stage") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DatasetError(f"{path}: expected a COCO-format list under '{key}'")
    try:
        images = pd.DataFrame(
            {
                "image_id": [int(im["id"]) for im in coco["images"]],
                "path": [str((path.parent / im["file_name"]).resolve()) for im in coco["images"]],
                "width": [int(im["width"]) for im in coco["images"]],
                "height": [int(im["height"]) for im in coco["images"]],
                # photo folders: "<size>:<mtime_ns>" of the file (a change re-extracts the image)
                "signature": [str(im.get("signature", "")) for im in coco["images"]],
            }
        )
        ann = coco["annotations"]
        xywh = np.asarray([a["bbox"] for a in ann], dtype=np.float64).reshape(-1, 4)
        boxes = pd.DataFrame(
            {
                "image_id": np.asarray([int(a["image_id"]) for a in ann], dtype=np.int64),
                "category_id": np.asarray([int(a["category_id"]) for a in ann], dtype=np.int64),
                "x1": xywh[:, 0],
                "y1": xywh[:, 1],
                "x2": xywh[:, 0] + xywh[:, 2],
                "y2": xywh[:, 1] + xywh[:, 3],
                # False: a ground-truth box that labels gallery objects but is not a query
                "query": np.asarray([bool(a.get("query", True)) for a in ann], dtype=bool),
            }
        )
        categories = pd.DataFrame(
            {
                "category_id": [int(c["id"]) for c in coco["categories"]],
                "name": [str(c["name"]) for c in coco["categories"]],
            }
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed COCO entry ({type(exc).__name__}: {exc})") from None
    return ImageTable(images=images, boxes=boxes, categories=categories)
