"""Ad-hoc retrieval: embed one query crop, search the built gallery index, draw the results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from stages import layout
from stages.boxes import clip_boxes
from stages.config import Params
from stages.crops import crop_boxes, read_image
from stages.crops.tensors import crops_to_tensor
from stages.errors import UserError
from stages.model import load_model, pretrained_model
from stages.shards import BOX_COLUMNS
from stages.tables import load_split
from stages.vectors.faiss_index import load_for_search


@dataclass(frozen=True)
class Hit:
    rank: int
    object_id: int
    image_id: int
    image_path: str
    box: tuple[float, float, float, float]
    distance: float


def query_crop(
    image_path: Path, box: tuple[float, float, float, float] | None, crop_size: int, reader=read_image
) -> np.ndarray:
    """The query crop: a box of an image, or the whole image when no box is given; ``reader``:
    how the image is read (``stages.data.image_reader``: EXIF-oriented for photo folders)."""
    image = reader(image_path)
    if image is None:
        raise UserError(f"cannot read image {image_path} (missing, unreadable or not an image)")
    h, w = image.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    b = np.asarray([box], dtype=np.float64)
    if not (b[0, 2] > b[0, 0] and b[0, 3] > b[0, 1]):
        raise UserError(f"box {list(box)} is empty: expected x1 < x2 and y1 < y2 (pixels)")
    clipped = clip_boxes(b, w, h)
    if not (clipped[0, 2] - clipped[0, 0] >= 1 and clipped[0, 3] - clipped[0, 1] >= 1):
        raise UserError(f"box {list(box)} lies outside the image {image_path} ({w}x{h} pixels)")
    return crop_boxes(image, clipped, crop_size)[0]


def search(
    crop: np.ndarray, k: int, params: Params, backbone: str, dataset: str, embedding: str = "model"
) -> list[Hit]:
    """The k gallery objects of ``dataset`` nearest to a query crop (RGB uint8), with ``backbone``'s
    'model' (trained) or 'pretrained' embedding (``params.index`` sets the search knobs)."""
    index_dir = layout.index_dir(backbone, dataset)
    index_file = index_dir / embedding / "gallery.faiss"
    if not index_file.exists():
        raise UserError(f"no index at {index_file}: build it first with `dvc repro` (or `python -m stages index`)")
    model, meta = load_model(layout.model_dir(backbone) / "model.pt")
    if embedding == "pretrained":
        model = pretrained_model(meta)
    with torch.no_grad():
        q = model.embed(crops_to_tensor([crop], meta["input_size"]).float().div_(255)).numpy()
    index = load_for_search(index_file, params.index)
    dist, rows = index.search(np.ascontiguousarray(q, dtype=np.float32), min(k, index.ntotal))
    gallery = pd.read_parquet(index_dir / "gallery.parquet", columns=["object_id", "image_id", *BOX_COLUMNS])
    paths = load_split(layout.dataset_dir(dataset) / "test.json").images.set_index("image_id")["path"]
    hits = []
    for rank, (r, d) in enumerate(zip(rows[0], dist[0]), start=1):  # k hits
        if r < 0:
            continue
        g = gallery.iloc[int(r)]
        hits.append(
            Hit(
                rank,
                int(g.object_id),
                int(g.image_id),
                str(paths.get(int(g.image_id), "?")),
                tuple(float(v) for v in g[BOX_COLUMNS]),
                float(np.sqrt(max(d, 0.0))),
            )
        )
    return hits


def draw_hits(query: np.ndarray, hits: list[Hit], path: Path, tile: int = 192, reader=read_image) -> None:
    """A sheet: the query crop, then each hit's image with its box drawn and its rank/distance."""
    tiles = [cv2.resize(query, (tile, tile), interpolation=cv2.INTER_LINEAR)]
    cv2.putText(tiles[0], "query", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    for hit in hits:
        image = reader(hit.image_path)
        if image is None:
            continue
        h, w = image.shape[:2]
        scale = tile / max(h, w)
        canvas = np.zeros((tile, tile, 3), np.uint8)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        canvas[: small.shape[0], : small.shape[1]] = small
        x1, y1, x2, y2 = (round(v * scale) for v in hit.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 0), 2)
        cv2.putText(
            canvas,
            f"#{hit.rank} d={hit.distance:.2f}",
            (4, tile - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        tiles.append(canvas)
    sheet = np.concatenate(tiles, axis=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write the picture to {path}")
