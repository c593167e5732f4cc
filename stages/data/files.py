"""File helpers shared by the real dataset sources: JSON loading, image folders, image sizes.

Real datasets are referenced in place (absolute ``file_name``), never copied.  A missing
annotation file, a missing image folder or a malformed file raises :class:`DatasetError`
naming the file and what was expected.  **Missing images** referenced by an annotation file
are skipped with a warning (count and first names): a few lost files should not stop a
12-hour extraction, and the warning says exactly which ones are absent.  When *every* image
of a split is missing the image folder is wrong, and that is an error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from stages.tables import DatasetError

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["image_id", "file_name", "width", "height", "n_source_boxes"]
ANNOTATION_COLUMNS = ["image_id", "category_id", "x", "y", "w", "h", "query"]


def require_path(path: str | Path | None, key: str, expected: str) -> Path:
    """``path`` as a Path; DatasetError naming the parameter key or the file when absent."""
    if path is None or str(path) == "":
        raise DatasetError(f"{key} is not set: expected {expected}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{p} not found: expected {expected}")
    return p


def load_json(path: Path, expected: str) -> object:
    """json.load with DatasetError messages that name the file and what was expected."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path} not found: expected {expected}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}): expected {expected}") from None


def list_images(folder: Path, what: str) -> dict[str, str]:
    """``{file name: absolute path}`` of the files directly in ``folder`` (one scandir)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} not found: expected {what}")
    root = folder.resolve()
    with os.scandir(root) as it:
        return {e.name: str(root / e.name) for e in it if e.is_file()}


def index_folders(folders: list[Path], what: str) -> dict[str, str]:
    """Basename -> absolute path over several folders (the first folder holding a name wins)."""
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found: expected {what}")
    found: dict[str, str] = {}
    for folder in reversed(folders):
        found.update(list_images(folder, what))
    return found


def resolve_images(images: pd.DataFrame, names: pd.Series, index: dict[str, str], source: str) -> pd.DataFrame:
    """Set ``file_name`` from ``index[names]``; drop (with a warning) images whose file is absent."""
    paths = names.map(index)
    missing = paths.isna().to_numpy()
    if missing.all() and len(images):
        raise DatasetError(
            f"{source}: none of the {len(images)} images was found (e.g. {names.iloc[0]!r}); "
            "check the image folder parameters"
        )
    if missing.any():
        shown = ", ".join(names[missing].astype(str).head(5))
        log.warning("%s: %d of %d images not found and skipped (%s ...)", source, missing.sum(), len(images), shown)
    out = images.loc[~missing].copy()
    out["file_name"] = paths[~missing].to_numpy()
    return out


def image_sizes(paths: list[str]) -> np.ndarray:
    """(n, 2) width, height read from the image headers (PIL opens lazily: no decoding)."""
    from PIL import Image

    sizes = np.zeros((len(paths), 2), np.int64)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                sizes[i] = im.size
        except OSError:  # unreadable image: size 0, dropped by the caller
            sizes[i] = 0
    return sizes


def boxes_frame(image_id, category_id, x, y, w, h, query) -> pd.DataFrame:
    """The common box table (COCO xywh in pixels, ``query`` False for label-only boxes)."""
    return pd.DataFrame(
        {
            "image_id": np.asarray(image_id, np.int64),
            "category_id": np.asarray(category_id, np.int64),
            "x": np.asarray(x, np.float64),
            "y": np.asarray(y, np.float64),
            "w": np.asarray(w, np.float64),
            "h": np.asarray(h, np.float64),
            "query": np.asarray(query, bool),
        },
        columns=ANNOTATION_COLUMNS,
    )


def clean_boxes(boxes: pd.DataFrame, images: pd.DataFrame, source: str) -> pd.DataFrame:
    """Keep boxes of kept images, clipped to the image; drop empty ones (counted in the log)."""
    boxes = boxes[boxes["image_id"].isin(images["image_id"])]
    size = images.set_index("image_id").loc[boxes["image_id"], ["width", "height"]].to_numpy(np.float64)
    x1 = np.clip(boxes["x"].to_numpy(), 0, size[:, 0])
    y1 = np.clip(boxes["y"].to_numpy(), 0, size[:, 1])
    x2 = np.clip((boxes["x"] + boxes["w"]).to_numpy(), 0, size[:, 0])
    y2 = np.clip((boxes["y"] + boxes["h"]).to_numpy(), 0, size[:, 1])
    out = boxes.assign(x=x1, y=y1, w=x2 - x1, h=y2 - y1)
    keep = (out["w"] > 0).to_numpy() & (out["h"] > 0).to_numpy()
    if (~keep).any():
        log.info("%s: %d empty or out-of-image boxes dropped", source, int((~keep).sum()))
    return out.loc[keep].reset_index(drop=True)
