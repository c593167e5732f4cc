"""COCO-format files in and out: reading COCO instances with pycocotools, writing the interchange.

The interchange (see :mod:`stages.tables`) is one COCO-format dict per split; a box with
``"query": false`` labels gallery objects but is not used as a query (crowd regions, VOC
"difficult" objects, Visual Genome objects outside the query sample, BelgaLogos instances).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from stages.atomic import atomic_path
from stages.data.files import ANNOTATION_COLUMNS, IMAGE_COLUMNS, boxes_frame, list_images, resolve_images
from stages.tables import DatasetError


def to_coco(images: pd.DataFrame, boxes: pd.DataFrame, categories: list[dict], extra: tuple[str, ...] = ()) -> dict:
    """Images (IMAGE_COLUMNS) + boxes (ANNOTATION_COLUMNS) -> a COCO dict; annotation ids 1..n.

    Images are sorted by id and boxes by (image id, source order); ``"query": false`` is
    written only on label-only boxes, so plain COCO readers see ordinary annotations.
    ``extra``: image columns also written into each image entry (e.g. ``signature``).
    """
    images = images.sort_values("image_id", kind="stable")
    boxes = boxes.loc[boxes["image_id"].isin(images["image_id"])]
    boxes = boxes.sort_values("image_id", kind="stable")
    imgs = [
        {"id": int(i), "file_name": str(f), "width": int(w), "height": int(h)}
        for i, f, w, h in zip(images["image_id"], images["file_name"], images["width"], images["height"])
    ]
    for key in extra:
        for entry, value in zip(imgs, images[key].tolist()):
            entry[key] = value
    xywh = np.round(boxes[["x", "y", "w", "h"]].to_numpy(np.float64), 2).tolist()
    anns = []
    for k, (img, cat, bb, q) in enumerate(
        zip(boxes["image_id"].tolist(), boxes["category_id"].tolist(), xywh, boxes["query"].tolist())
    ):
        a = {
            "id": k + 1,
            "image_id": img,
            "category_id": cat,
            "bbox": bb,
            "area": round(bb[2] * bb[3], 2),
            "iscrowd": 0,
        }
        if not q:
            a["query"] = False
        anns.append(a)
    cats = [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]
    return {"images": imgs, "annotations": anns, "categories": cats}


def write_dataset(splits: dict[str, dict], out_dir: str | Path) -> list[Path]:
    """Write each split's COCO dict to ``out_dir/{split}.json`` atomically."""
    written = []
    for split, coco in splits.items():
        path = Path(out_dir) / f"{split}.json"
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(coco, f)
        written.append(path)
    return written


def read_coco_instances(
    ann_file: Path, image_dir: Path, crowd_queries: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Read a COCO instances file with pycocotools: (images, boxes, categories).

    ``file_name`` is resolved against ``image_dir`` (absolute paths); images whose file is
    absent are skipped with a warning.  Crowd regions (``iscrowd: 1``) become label-only
    boxes when ``crowd_queries`` is false.  ``n_source_boxes`` counts every annotation of the
    image in the file (crowd included), before any filtering.
    """
    from pycocotools.coco import COCO

    expected = "a COCO instances file (images, annotations, categories)"
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file} not found: expected {expected}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco = COCO(str(ann_file))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{ann_file} is not valid JSON ({exc}): expected {expected}") from None
    except (AssertionError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{ann_file}: malformed COCO file ({type(exc).__name__}: {exc}): expected {expected}"
        ) from None
    data = coco.dataset
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: no '{key}' list: expected {expected}")
    try:
        ims, anns = data["images"], data["annotations"]
        images = pd.DataFrame(
            {
                "image_id": np.asarray([im["id"] for im in ims], np.int64),
                "width": np.asarray([im["width"] for im in ims], np.int64),
                "height": np.asarray([im["height"] for im in ims], np.int64),
            }
        )
        names = pd.Series([im["file_name"] for im in ims], dtype=object)
        xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        crowd = np.asarray([a.get("iscrowd", 0) for a in anns], bool)
        boxes = boxes_frame(
            [a["image_id"] for a in anns],
            [a["category_id"] for a in anns],
            xywh[:, 0],
            xywh[:, 1],
            xywh[:, 2],
            xywh[:, 3],
            crowd_queries | ~crowd,
        )
        categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in data["categories"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"{ann_file}: malformed COCO entry ({type(exc).__name__}: {exc}): expected {expected}"
        ) from None
    counts = boxes["image_id"].value_counts()
    images["n_source_boxes"] = images["image_id"].map(counts).fillna(0).astype(np.int64)
    images["file_name"] = names.to_numpy()
    images = _resolve_relative(images, names, image_dir, str(ann_file))
    return images[IMAGE_COLUMNS], boxes[ANNOTATION_COLUMNS], categories


def _resolve_relative(images: pd.DataFrame, names: pd.Series, image_dir: Path, source: str) -> pd.DataFrame:
    """Resolve file names relative to image_dir: one scandir for bare names, stat otherwise."""
    if names.str.contains("/", regex=False).any():
        root = image_dir.resolve()
        if not root.is_dir():
            raise DatasetError(f"{image_dir} not found: expected the image folder of {source}")
        full = [str(root / n) for n in names]
        index = {n: p for n, p in zip(names, full) if os.path.isfile(p)}
    else:
        index = list_images(image_dir, f"the image folder of {source}")
    return resolve_images(images.reset_index(drop=True), names.reset_index(drop=True), index, source)
