"""Visual Genome (evaluation only): one ``test`` split over ``objects.json`` + ``image_data.json``.

- **Class** of an object: its first WordNet synset (``synsets[0]``, e.g. ``tree.n.01``) when
  it has one, else its first name lower-cased and stripped (``names[0]``, ``name`` in v1.0).
  Objects with neither are dropped.  Category ids are 1..K over the sorted class names.
- **Queries** (a seeded rule; the paper does not give its own): among objects whose box has
  both sides >= ``min_side`` and whose class occurs in >= ``min_images`` images, shuffle with
  the global seed, keep at most ``max_per_class`` per class (in shuffled order) and take the
  first ``max_queries``.  Every other object stays as a label-only box (``"query": false``)
  that still labels gallery objects.
- **Images**: file = basename of ``url`` (``<image_id>.jpg`` without one) found in
  ``image_dirs`` (``VG_100K``, ``VG_100K_2``); ``max_images`` draws a seeded subset first.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from stages.config import VisualGenomeParams
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


def _first(values) -> object:
    return values[0] if isinstance(values, list) and values else None


def read_objects(path: Path) -> pd.DataFrame:
    """One row per object: image_id, x, y, w, h, cls (rule in the module docstring)."""
    expected = "Visual Genome objects.json (a list of {image_id, objects: [{x, y, w, h, names, synsets}]})"
    data = load_json(path, expected)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected {expected}")
    try:
        rows = [
            (
                e.get("image_id", e.get("id")),
                o["x"],
                o["y"],
                o["w"],
                o["h"],
                _first(o.get("synsets")),
                _first(o.get("names")) or o.get("name"),
            )
            for e in data
            for o in e["objects"]
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{path}: malformed object entry ({type(exc).__name__}: {exc}): expected {expected}"
        ) from None
    del data
    df = pd.DataFrame(rows, columns=["image_id", "x", "y", "w", "h", "synset", "name"])
    if df["image_id"].isna().any():
        raise DatasetError(f"{path}: an entry has no image_id: expected {expected}")
    name = df["name"].astype("string").str.strip().str.lower().replace("", pd.NA)
    df["cls"] = df["synset"].astype("string").fillna(name)
    df = df.dropna(subset=["cls"]).drop(columns=["synset", "name"])
    return df.astype({"image_id": np.int64, "x": np.float64, "y": np.float64, "w": np.float64, "h": np.float64})


def read_images(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Image table (image_id, width, height) and each image's file basename."""
    expected = "Visual Genome image_data.json (a list of {image_id, width, height, url})"
    data = load_json(path, expected)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected {expected}")
    try:
        ids = np.asarray([d.get("image_id", d.get("id")) for d in data], np.int64)
        images = pd.DataFrame(
            {"image_id": ids, "width": [int(d["width"]) for d in data], "height": [int(d["height"]) for d in data]}
        )
        urls = [d.get("url") for d in data]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"{path}: malformed image entry ({type(exc).__name__}: {exc}): expected {expected}"
        ) from None
    names = pd.Series([u.rsplit("/", 1)[-1] if u else f"{i}.jpg" for u, i in zip(urls, ids)], dtype=object)
    return images, names


def select_queries(objects: pd.DataFrame, cfg: VisualGenomeParams, seed: int) -> np.ndarray:
    """Boolean query mask over ``objects`` (the seeded rule of the module docstring)."""
    n_images = objects.groupby("cls")["image_id"].nunique()
    ok = (
        (objects["w"] >= cfg.min_side)
        & (objects["h"] >= cfg.min_side)
        & (objects["cls"].map(n_images) >= cfg.min_images)
    ).to_numpy()
    cand = np.flatnonzero(ok)
    rng = np.random.default_rng([seed % (1 << 64), zlib.crc32(b"visual_genome/queries")])
    cand = cand[rng.permutation(len(cand))]
    if cfg.max_per_class is not None:
        rank = objects["cls"].iloc[cand].groupby(objects["cls"].iloc[cand].to_numpy()).cumcount().to_numpy()
        cand = cand[rank < cfg.max_per_class]
    mask = np.zeros(len(objects), bool)
    mask[cand[: cfg.max_queries]] = True
    return mask


def build(cfg: VisualGenomeParams, seed: int) -> dict[str, dict]:
    """``{"test": coco dict}`` of Visual Genome."""
    root = require_path(
        cfg.root, "data.visual_genome.root", "the Visual Genome folder (objects.json, image_data.json, VG_100K/)"
    )
    images, names = read_images(root / "image_data.json")
    if cfg.max_images is not None and cfg.max_images < len(images):
        rng = np.random.default_rng([seed % (1 << 64), zlib.crc32(b"visual_genome/images")])
        pick = np.sort(rng.choice(len(images), size=cfg.max_images, replace=False))
        images, names = images.iloc[pick].reset_index(drop=True), names.iloc[pick].reset_index(drop=True)
    dirs = [Path(d).expanduser() if Path(d).expanduser().is_absolute() else root / d for d in cfg.image_dirs]
    index = index_folders(dirs, "a Visual Genome image folder (data.visual_genome.image_dirs)")
    images["n_source_boxes"] = 0
    images = resolve_images(images, names, index, str(root / "image_data.json"))
    objects = read_objects(root / "objects.json")
    objects = objects[objects["image_id"].isin(images["image_id"])].reset_index(drop=True)
    classes = np.sort(objects["cls"].unique().astype(str))
    cat_id = pd.Series(np.arange(1, len(classes) + 1), index=classes)
    query = select_queries(objects, cfg, seed)
    boxes = boxes_frame(
        objects["image_id"], objects["cls"].map(cat_id), objects["x"], objects["y"], objects["w"], objects["h"], query
    )
    boxes = clean_boxes(boxes, images, "visual_genome")
    categories = [{"id": int(i), "name": str(c)} for c, i in cat_id.items()]
    coco = to_coco(images[IMAGE_COLUMNS], boxes, categories)
    log.info(
        "visual_genome test: %d images, %d boxes (%d queries), %d classes",
        len(coco["images"]),
        len(coco["annotations"]),
        int(boxes["query"].sum()),
        len(categories),
    )
    return {"test": coco}
