"""The ``images`` source: folders or glob patterns of photos, no annotations.

The collection becomes one table, ``test.json``: it is the gallery, and (``Source.train_split``
= ``test``) also the training set, so every photo is extracted once.  It has no annotation and no
category: the splits stage then takes every extracted object as a training object and the
evaluate stage writes ``{"ground_truth": false, ...}``.

* **Listing** (:func:`stages.scan.listing.scan_files`): each entry of ``data.images.paths`` is a folder (searched
  recursively), a glob pattern (``**`` allowed) or a file; files are kept by extension.  Only
  ``stat`` is called (path, size, mtime_ns): cheap enough to run on every ``dvc repro`` (stage
  ``scan``) so DVC never hashes the photos themselves.
* **Image ids** are a hash of the path as listed (53 bits, exact in JSON and JavaScript), so an
  image keeps its id, and its objects keep theirs, when other photos are added or removed.
* **Headers** are read with Pillow (size, EXIF orientation); a file Pillow cannot open is skipped
  with a warning and counted in ``report.json``.  Truncated files open but do not decode: the
  extract stage skips them (warning, ``skipped_images`` in ``objects/summary.json``).
* **Pixels**: the EXIF orientation is applied (:func:`stages.crops.read_photo`), so boxes, crops and sizes are
  those of the photo as a viewer (or a browser) shows it.  Every stage reads this source's images
  through it (``stages.crops.image_reader``); the other sources keep the stored
  pixel grid their annotations were drawn on.
* **Duplicates**: files of equal size are hashed (SHA-256; sizes rarely collide, so few files are
  read); exact duplicates are reported, and dropped (first path kept) with ``drop_duplicates``.
* **Signature**: each image entry carries ``"signature": "<size>:<mtime_ns>"``; the extract stage
  re-extracts an image whose signature changed (see :mod:`stages.extract.extraction`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stages.config import ImagesParams
from stages.scan.listing import scan_files
from stages.tables import DatasetError

log = logging.getLogger(__name__)

_ORIENTATION_TAG = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


def image_ids(paths: pd.Series) -> np.ndarray:
    """Stable ids: the first 53 bits of the SHA-1 of each path (exact in JSON and in JavaScript)."""
    ids = np.fromiter(
        (int.from_bytes(hashlib.sha1(p.encode()).digest()[:8], "big") >> 11 for p in paths), np.int64, len(paths)
    )
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():  # ~1e-6 at a million photos; never silently merge two photos
        raise DatasetError(f"images: two paths hash to the same image id: {paths[dup].tolist()[:2]}; rename one")
    return ids


def read_headers(paths: list[str]) -> pd.DataFrame:
    """``width, height`` (as displayed: EXIF orientation applied), ``orientation`` (0: unreadable)."""
    from PIL import Image

    out = np.zeros((len(paths), 3), np.int64)
    for i, p in enumerate(tqdm(paths, desc="image headers", unit="img", disable=len(paths) < 1000)):
        try:
            with Image.open(p) as im:  # lazy: reads the header, decodes nothing
                w, h = im.size
                orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
        except Exception:  # any failure to open: an unreadable file
            continue
        if orientation in _SWAPS_SIDES:
            w, h = h, w
        out[i] = (w, h, orientation if 1 <= orientation <= 8 else 1)
    return pd.DataFrame(out, columns=["width", "height", "orientation"])


def duplicate_groups(files: pd.DataFrame) -> list[list[int]]:
    """Row groups of byte-identical files: only files sharing their size with another are hashed."""
    same_size = files[files["size"].duplicated(keep=False)]
    if same_size.empty:
        return []
    paths = tqdm(same_size["path"], desc="duplicates", unit="file", disable=len(same_size) < 1000)
    digests = [_sha256(p) for p in paths]
    keyed = pd.DataFrame({"row": same_size.index.to_numpy(), "digest": digests})
    keyed = keyed[keyed["digest"].duplicated(keep=False)]
    return [sorted(g.tolist()) for _, g in keyed.groupby("digest", sort=False)["row"]]


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def build(cfg: ImagesParams, out_dir: Path) -> tuple[dict[str, dict], dict]:
    """``({"test": COCO dict}, report)`` of the photo collection (see the module docstring).

    ``file_name`` is relative to ``out_dir`` for relative paths (the tables stay valid in a clone
    of the repository elsewhere), absolute otherwise."""
    from stages.data.coco_json import to_coco

    if not cfg.paths:  # as the other sources' unset keys (scan_files raises an InputError)
        raise DatasetError("data.images.paths is not set: expected folders or glob patterns of photos")
    files = pd.DataFrame(scan_files(cfg), columns=["path", "size", "mtime_ns"]).astype(
        {"size": np.int64, "mtime_ns": np.int64}
    )
    if files.empty:
        raise DatasetError(f"no photo found in data.images.paths {list(cfg.paths)} (extensions {list(cfg.extensions)})")
    heads = read_headers(files["path"].tolist())
    readable = (heads["orientation"] > 0).to_numpy()
    unreadable = files.loc[~readable, "path"].tolist()
    if unreadable:
        log.warning("images: %d files cannot be opened and are skipped (%s ...)", len(unreadable), unreadable[:5])
    groups = duplicate_groups(files.loc[readable])
    extra = [r for g in groups for r in g[1:]]
    if groups:
        shown = [[files.at[r, "path"] for r in g] for g in groups[:3]]
        log.warning("images: %d exact duplicate files in %d groups (%s ...)", len(extra), len(groups), shown)
    keep = readable.copy()
    if cfg.drop_duplicates:
        keep[extra] = False
    kept, kept_heads = files.loc[keep].reset_index(drop=True), heads.loc[keep].reset_index(drop=True)
    base = os.path.abspath(out_dir)
    names = [p if os.path.isabs(p) else os.path.relpath(os.path.abspath(p), base) for p in kept["path"]]
    images = pd.DataFrame(
        {
            "image_id": image_ids(kept["path"]),
            "file_name": names,
            "width": kept_heads["width"].to_numpy(),
            "height": kept_heads["height"].to_numpy(),
            "n_source_boxes": 0,
            "signature": [f"{s}:{m}" for s, m in zip(kept["size"].tolist(), kept["mtime_ns"].tolist())],
        }
    )
    no_boxes = pd.DataFrame(columns=["image_id", "category_id", "x", "y", "w", "h", "query"])
    coco = to_coco(images, no_boxes, [], extra=("signature",))
    report = {
        "files": len(files),
        "images": len(images),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable[:100],
        "duplicate_groups": len(groups),
        "duplicate_files": len(extra),
        "duplicates": [[files.at[r, "path"] for r in g] for g in groups[:100]],
        "duplicates_dropped": bool(cfg.drop_duplicates),
        "exif_rotated": int((kept_heads["orientation"] > 1).sum()),
    }
    return {"test": coco}, report
