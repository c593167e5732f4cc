"""The paper's benchmark: COCO 2017 + VOC 2007, with VOC classes mapped onto COCO's 80.

- **train**: COCO ``train2017`` + VOC ``trainval`` (which contains VOC07 ``val``), minus
  the validation subset; every image is kept, annotated or not.
- **val**: ``val_images`` training images drawn with the global seed (paper: 2,000), removed
  from train (123,298 - 2,000 = the paper's 121,298 training images).
- **test**: COCO ``val2017`` + VOC ``test``; images without any annotation are dropped
  (``drop_unannotated_test``): 4,952 + 4,952 = the paper's 9,904 test images.  Every box is a
  query (crowd regions and "difficult" objects included): 36,781 + 14,976 = the paper's
  51,757 queries.  ``crowd_queries: false`` / ``include_difficult: false`` turn those into
  label-only boxes (``"query": false``) instead.

Image ids: COCO ids are kept (all below 10^9).  A VOC image ``NNNNNN`` (VOC2007) gets
``1_000_000_000 + NNNNNN``, and ``YYYY_NNNNNN`` (VOC2008+) gets
``1_000_000_000 + (YYYY - 2000) * 1_000_000 + NNNNNN``: unique across COCO and VOC, stable
across runs and below 2^31.  Categories are COCO's (ids and names from the COCO file).
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from stages.config import CocoVocParams
from stages.data.coco_json import read_coco_instances, to_coco
from stages.data.files import IMAGE_COLUMNS, boxes_frame, clean_boxes, list_images, require_path, resolve_images
from stages.data.voc_xml import VOC_TO_COCO_NAME, read_voc
from stages.tables import DatasetError

log = logging.getLogger(__name__)

VOC_ID_OFFSET = 1_000_000_000
_VOC_NAME = re.compile(r"^(?:(\d{4})_)?(\d{1,6})$")


def voc_image_id(name: str) -> int:
    """The unique image id of a VOC image name (rule in the module docstring)."""
    m = _VOC_NAME.match(name)
    if m is None:
        raise DatasetError(f"VOC image name {name!r}: expected NNNNNN (VOC2007) or YYYY_NNNNNN")
    year = int(m.group(1)) - 2000 if m.group(1) else 0
    if not 0 <= year < 1000:
        raise DatasetError(f"VOC image name {name!r}: year out of range")
    return VOC_ID_OFFSET + year * 1_000_000 + int(m.group(2))


def voc_category_ids(voc_names: pd.Series, categories: list[dict], source: str) -> np.ndarray:
    """COCO category id of each VOC class name (VOC_TO_COCO_NAME, else the same name)."""
    by_name = {c["name"]: c["id"] for c in categories}
    coco_names = voc_names.map(lambda n: VOC_TO_COCO_NAME.get(n, n))
    ids = coco_names.map(by_name)
    if ids.isna().any():
        bad = sorted(set(voc_names[ids.isna()]))
        raise DatasetError(f"{source}: VOC classes {bad} have no COCO category (expected the 20 VOC classes)")
    return ids.to_numpy(np.int64)


def _coco_set(root: Path, name: str, crowd_queries: bool) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    ann = root / "annotations" / f"instances_{name}.json"
    if not ann.is_file():
        raise DatasetError(f"{ann} not found: expected COCO 2017 annotations under coco_root/annotations/")
    images, boxes, cats = read_coco_instances(ann, root / name, crowd_queries=crowd_queries)
    if len(images) and images["image_id"].max() >= VOC_ID_OFFSET:
        raise DatasetError(f"{ann}: image ids must be below {VOC_ID_OFFSET} to stay apart from VOC ids")
    return images, boxes, cats


def _voc_sets(
    root: Path, sets: tuple[str, ...], categories: list[dict], include_difficult: bool, progress: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    images, objects = read_voc(root, list(sets), progress=progress)
    ids = images["name"].map(voc_image_id).to_numpy(np.int64)
    counts = objects["name"].value_counts()
    table = pd.DataFrame(
        {
            "image_id": ids,
            "width": images["width"].to_numpy(np.int64),
            "height": images["height"].to_numpy(np.int64),
            "n_source_boxes": images["name"].map(counts).fillna(0).astype(np.int64).to_numpy(),
        }
    )
    index = list_images(root / "JPEGImages", "the VOC images under voc_root/JPEGImages/")
    basenames = images["file"].map(lambda f: Path(f).name)
    table = resolve_images(table, basenames, index, f"{root} ({'+'.join(sets)})")
    obj_ids = objects["name"].map(voc_image_id).to_numpy(np.int64)
    boxes = boxes_frame(
        obj_ids,
        voc_category_ids(objects["cls"], categories, str(root / "Annotations")),
        objects["x"],
        objects["y"],
        objects["w"],
        objects["h"],
        include_difficult | ~objects["difficult"].to_numpy(bool),
    )
    return table[IMAGE_COLUMNS], boxes


def _check_categories(a: list[dict], b: list[dict], where: str) -> None:
    if [(c["id"], c["name"]) for c in a] != [(c["id"], c["name"]) for c in b]:
        raise DatasetError(f"{where}: the COCO train and test files list different categories")


def build(cfg: CocoVocParams, seed: int, progress: bool = True) -> dict[str, dict]:
    """``{"train", "val", "test"}`` COCO dicts of the COCO+VOC benchmark (see module docstring)."""
    coco_root = require_path(
        cfg.coco_root, "data.coco_voc.coco_root", "the COCO 2017 folder (annotations/, train2017/, val2017/)"
    )
    voc_root = require_path(cfg.voc_root, "data.coco_voc.voc_root", "the VOCdevkit/VOC2007 folder")
    overlap = set(cfg.voc_train) & set(cfg.voc_test)
    if overlap:
        raise DatasetError(f"data.coco_voc: VOC sets {sorted(overlap)} are in both voc_train and voc_test")

    tr_img, tr_box, cats = _coco_set(coco_root, cfg.coco_train, cfg.crowd_queries)
    te_img, te_box, te_cats = _coco_set(coco_root, cfg.coco_test, cfg.crowd_queries)
    _check_categories(cats, te_cats, str(coco_root / "annotations"))
    vtr_img, vtr_box = _voc_sets(voc_root, cfg.voc_train, cats, cfg.include_difficult, progress)
    vte_img, vte_box = _voc_sets(voc_root, cfg.voc_test, cats, cfg.include_difficult, progress)
    if set(vtr_img["image_id"]) & set(vte_img["image_id"]):
        raise DatasetError(f"{voc_root}: the VOC train sets {cfg.voc_train} and test sets {cfg.voc_test} share images")

    train_img = pd.concat([tr_img, vtr_img], ignore_index=True)
    train_box = pd.concat([tr_box, vtr_box], ignore_index=True)
    test_img = pd.concat([te_img, vte_img], ignore_index=True)
    test_box = pd.concat([te_box, vte_box], ignore_index=True)
    if cfg.drop_unannotated_test:
        test_img = test_img[test_img["n_source_boxes"] > 0]

    n_val = min(cfg.val_images, len(train_img))
    rng = np.random.default_rng([seed % (1 << 64), zlib.crc32(b"coco_voc/val")])
    pick = np.zeros(len(train_img), bool)
    pick[rng.choice(len(train_img), size=n_val, replace=False)] = True
    val_img, train_img = train_img[pick], train_img[~pick]

    out = {}
    for split, img, box in (("train", train_img, train_box), ("val", val_img, train_box), ("test", test_img, test_box)):
        box = clean_boxes(box, img, f"coco_voc {split}")
        out[split] = to_coco(img, box, cats)
        log.info("coco_voc %s: %d images, %d boxes", split, len(out[split]["images"]), len(out[split]["annotations"]))
    return out
