"""BelgaLogos (evaluation only): one ``test`` split, 10,000 press photos, 55 query logos.

Files under ``root`` (the dataset's own distribution):

- ``images/*.jpg``: the 10,000 gallery images (every file there is an image of the split).
- ``qset3_internal_and_local.gt`` (the *local* ground truth): one logo instance per line,
  whitespace separated ``instance_id logo image type state x1 y1 x2 y2``; ``state`` 1 = clearly
  visible ("OK"), 0 = partly visible ("junk"); boxes are pixel corners.  37 logos.
- ``qset1_internal.qry``: the 55 query logos, ``name image x1 y1 x2 y2`` (``name`` = logo +
  a number, e.g. ``Nike2``); the query images are among the 10,000.

Mapping: image id = the number of the file name (``00000123.jpg`` -> 123; 1..N in name order
if the names are not all numbers); categories = the ground-truth logos (ids 1..37 in sorted name order); every
ground-truth instance is a label-only box (``"query": false``; state-0 instances only with
``include_junk``); each query is a box of its logo with ``query`` true.  Because the local
ground truth boxes every instance, the evaluation is object-level *and* image-level (the
global ground truth, image-level only, is not needed).  Query names are matched to logo
names case-insensitively, after QUERY_ALIASES (the query file's own spellings).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from stages.config import BelgaLogosParams
from stages.data.coco_json import to_coco
from stages.data.files import IMAGE_COLUMNS, boxes_frame, clean_boxes, image_sizes, list_images, require_path
from stages.tables import DatasetError

log = logging.getLogger(__name__)

#: Query-name stems of qset1 spelled differently from the ground truth's logo names.
QUERY_ALIASES = {"addidas": "adidas", "addidas-text": "adidas-text", "president": "us_president"}

GT_COLUMNS = ["instance", "logo", "image", "type", "state", "x1", "y1", "x2", "y2"]
QRY_COLUMNS = ["name", "image", "x1", "y1", "x2", "y2"]


def _read_table(path: Path, columns: list[str], expected: str) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path} not found: expected {expected}")
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, engine="python")
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path} is empty: expected {expected}") from None
    if df.shape[1] != len(columns):
        raise DatasetError(f"{path}: {df.shape[1]} columns, expected {len(columns)} ({' '.join(columns)}): {expected}")
    df.columns = columns
    try:
        for c in ("x1", "y1", "x2", "y2") + (("state",) if "state" in columns else ()):
            df[c] = df[c].astype(np.float64)
    except ValueError as exc:
        raise DatasetError(f"{path}: non-numeric box or state ({exc}): expected {expected}") from None
    return df


def read_ground_truth(path: Path) -> pd.DataFrame:
    return _read_table(path, GT_COLUMNS, "the BelgaLogos local ground truth (id logo image type state x1 y1 x2 y2)")


def read_queries(path: Path) -> pd.DataFrame:
    return _read_table(path, QRY_COLUMNS, "the BelgaLogos query list (name image x1 y1 x2 y2)")


def query_logos(names: pd.Series, logos: list[str], source: str) -> pd.Series:
    """Logo name of each query name (trailing digits dropped, aliases, case-insensitive)."""
    by_lower = {name.lower(): name for name in logos}
    stems = names.map(lambda n: re.sub(r"\d+$", "", n).lower())
    logo = stems.map(lambda s: by_lower.get(QUERY_ALIASES.get(s, s)))
    if logo.isna().any():
        bad = sorted(set(names[logo.isna()]))
        raise DatasetError(f"{source}: queries {bad} match no logo of the ground truth")
    return logo


def build(cfg: BelgaLogosParams, seed: int = 0) -> dict[str, dict]:
    """``{"test": coco dict}`` of BelgaLogos (deterministic: ``seed`` is unused)."""
    root = require_path(
        cfg.root, "data.belgalogos.root", "the BelgaLogos folder (images/, qset3_internal_and_local.gt)"
    )
    gt = read_ground_truth(root / cfg.ground_truth)
    qry = read_queries(root / cfg.queries)
    files = list_images(root / "images", "the 10,000 BelgaLogos images under root/images/")
    names = sorted(n for n in files if n.lower().endswith((".jpg", ".jpeg", ".png")))
    if not names:
        raise DatasetError(f"{root / 'images'}: no image found: expected the BelgaLogos JPEG images")
    for what, table, src in (("ground truth", gt, cfg.ground_truth), ("queries", qry, cfg.queries)):
        missing = sorted(set(table["image"]) - set(names))
        if missing:
            raise DatasetError(
                f"{root / src}: {len(missing)} {what} images not in {root / 'images'} (e.g. {missing[:3]})"
            )
    sizes = image_sizes([files[n] for n in names])
    stems = [Path(n).stem for n in names]
    if all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems):
        ids = np.asarray([int(s) for s in stems], np.int64)  # 00000123.jpg -> 123
    else:
        ids = np.arange(1, len(names) + 1, dtype=np.int64)
    images = pd.DataFrame(
        {
            "image_id": ids,
            "file_name": [files[n] for n in names],
            "width": sizes[:, 0],
            "height": sizes[:, 1],
            "n_source_boxes": 0,
        }
    )
    unreadable = images["width"] == 0
    if unreadable.any():
        log.warning(
            "belgalogos: %d unreadable images skipped (%s ...)",
            int(unreadable.sum()),
            ", ".join(np.array(names)[unreadable][:5]),
        )
        images = images[~unreadable]
    image_id = pd.Series(ids, index=names)
    logos = sorted(gt["logo"].unique())
    logo_id = pd.Series(np.arange(1, len(logos) + 1), index=logos)
    if not cfg.include_junk:
        gt = gt[gt["state"] > 0]
    qlogo = query_logos(qry["name"], logos, str(root / cfg.queries))
    both = pd.concat(
        [
            gt.assign(cat=gt["logo"].map(logo_id), query=False),
            qry.assign(cat=qlogo.map(logo_id).to_numpy(), query=True),
        ],
        ignore_index=True,
    )
    boxes = boxes_frame(
        both["image"].map(image_id),
        both["cat"],
        both["x1"],
        both["y1"],
        both["x2"] - both["x1"],
        both["y2"] - both["y1"],
        both["query"].to_numpy(bool),
    )
    boxes = clean_boxes(boxes, images, "belgalogos")
    categories = [{"id": int(i), "name": str(n)} for n, i in logo_id.items()]
    coco = to_coco(images[IMAGE_COLUMNS], boxes, categories)
    log.info(
        "belgalogos test: %d images, %d queries, %d ground-truth instances, %d logos",
        len(coco["images"]),
        int(boxes["query"].sum()),
        int((~boxes["query"]).sum()),
        len(categories),
    )
    return {"test": coco}
