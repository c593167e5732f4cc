"""The ``coco`` source: any COCO-format instances file with its image folder, split into train / test.

Read with :func:`stages.data.coco_json.read_coco_instances` (pycocotools; images absent from the
folder are skipped with a warning).  The split is either

* **the user's files** (``train_split`` and/or ``test_split``): text files with one image per line,
  given as its image id or its file name (as in the COCO file, or just the base name); blank lines
  and ``#`` comments are ignored.  With one file, the other split is the rest of the images; an
  image listed in both is an error; entries that match no image are reported;
* or **seeded**: a ``test_share`` of the images, drawn with ``seed`` (same seed, same split).

Categories are the file's; the splits stage orders them into Task1-4 (ORE order for COCO's 80
names, four contiguous chunks otherwise).
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from stages.config import CocoParams
from stages.data.coco_json import read_coco_instances, to_coco
from stages.data.files import clean_boxes, require_path
from stages.tables import DatasetError

log = logging.getLogger(__name__)


def read_split_file(path: Path, ids: np.ndarray, names: pd.Series) -> np.ndarray:
    """Boolean mask over the images (``ids``, file ``names`` relative to the image folder) listed in
    ``path``: each line an image id or a file name / base name."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from None
    entries = [line.split("#", 1)[0].strip() for line in lines]
    entries = [e for e in entries if e]
    by_id = {str(i): k for k, i in enumerate(ids.tolist())}
    by_name = {n: k for k, n in enumerate(names.tolist())}
    by_base = {}
    for k, n in enumerate(names.tolist()):
        by_base.setdefault(os.path.basename(n), k)
    mask = np.zeros(len(ids), bool)
    unknown = []
    for e in entries:  # one lookup per listed image (a text file, not a hot path)
        k = by_id.get(e, by_name.get(e, by_base.get(os.path.basename(e))))
        if k is None:
            unknown.append(e)
        else:
            mask[k] = True
    if entries and len(unknown) == len(entries):
        raise DatasetError(f"{path}: none of its {len(entries)} entries is an image id or file name of the COCO file")
    if unknown:
        log.warning("coco: %d entries of %s match no image and are ignored (%s ...)", len(unknown), path, unknown[:5])
    return mask


def seeded_test_mask(n: int, share: float, seed: int) -> np.ndarray:
    """``round(share * n)`` images (at least one of each split when n >= 2) drawn with ``seed``."""
    n_test = int(round(share * n))
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    rng = np.random.default_rng([seed % (1 << 64), zlib.crc32(b"coco/test")])
    mask = np.zeros(n, bool)
    mask[rng.choice(n, size=n_test, replace=False)] = True
    return mask


def build(cfg: CocoParams, seed: int) -> dict[str, dict]:
    """``{"train", "test"}`` COCO dicts of a COCO-format instances file (see the module docstring)."""
    ann = require_path(cfg.annotations, "data.coco.annotations", "a COCO instances JSON file")
    image_dir = require_path(cfg.images, "data.coco.images", "the image folder of the COCO file")
    images, boxes, cats = read_coco_instances(ann, image_dir, cfg.crowd_queries)
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    root = str(image_dir.resolve())
    names = images["file_name"].map(lambda p: os.path.relpath(p, root))
    ids = images["image_id"].to_numpy(np.int64)
    if cfg.train_split is None and cfg.test_split is None:
        test = seeded_test_mask(len(images), cfg.test_share, seed)
        train = ~test
    else:
        train = test = None
        if cfg.train_split is not None:
            train = read_split_file(require_path(cfg.train_split, "data.coco.train_split", "a split file"), ids, names)
        if cfg.test_split is not None:
            test = read_split_file(require_path(cfg.test_split, "data.coco.test_split", "a split file"), ids, names)
        train = ~test if train is None else train
        test = ~train if test is None else test
        both = train & test
        if both.any():
            raise DatasetError(
                f"data.coco: {int(both.sum())} images are in both split files (e.g. {names[both].iloc[0]!r})"
            )
    test_img = images[test]
    if cfg.drop_unannotated_test:
        test_img = test_img[test_img["n_source_boxes"] > 0]
    out = {}
    for split, img in (("train", images[train]), ("test", test_img)):
        if img.empty:
            raise DatasetError(f"data.coco: the {split} split is empty; check test_share or the split files")
        box = clean_boxes(boxes, img, f"coco {split}")
        out[split] = to_coco(img, box, cats)
        log.info("coco %s: %d images, %d boxes", split, len(out[split]["images"]), len(out[split]["annotations"]))
    return out
