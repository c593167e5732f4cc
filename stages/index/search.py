"""Ad-hoc retrieval: embed a query crop, search a built gallery index, turn rows into hits.

The building blocks are shared by the ``search`` command and the ``serve`` web page:

* :func:`crop_query` / :func:`query_crop`: a checked box of an image (array or file) as a crop,
  with the box's area (a ``routed`` model picks the head of that scale group);
* :class:`Embedder` (:func:`load_embedder`): one loaded model, trained or pretrained, crops -> vectors;
* :class:`Gallery` (:func:`open_gallery`): one FAISS index with its object and image tables,
  vectors -> :class:`Hit` rows (offset/limit for "more results").

:func:`search` composes them for one query (the CLI); a server keeps the loaded objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from stages import layout
from stages.boxes import box_area, clip_boxes
from stages.config import IndexParams, Params
from stages.crops import crop_boxes, read_image
from stages.crops.tensors import crops_to_tensor
from stages.errors import InputError, MissingInputError
from stages.model import load_model, pretrained_model
from stages.shards import BOX_COLUMNS
from stages.tables import load_split
from stages.vectors.faiss_index import load_for_search

Box = tuple[float, float, float, float]  # x1 y1 x2 y2, pixels


@dataclass(frozen=True)
class Hit:
    rank: int
    object_id: int
    image_id: int
    image_path: str
    box: Box
    distance: float


def crop_query(image: np.ndarray, box: Box | None, crop_size: int, name: str) -> tuple[np.ndarray, float]:
    """The query crop of an RGB uint8 image: a box (pixels x1 y1 x2 y2, clipped), or the whole
    image; and the clipped box's area (pixels), the scale a routed embedding reads.

    Raises InputError (naming ``name``) for an empty box or one outside the image.
    """
    h, w = image.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    b = np.asarray([box], dtype=np.float64)
    if not np.isfinite(b).all() or not (b[0, 2] > b[0, 0] and b[0, 3] > b[0, 1]):
        raise InputError(f"box {list(box)} is empty: expected x1 < x2 and y1 < y2 (pixels)")
    clipped = clip_boxes(b, w, h)
    if not (clipped[0, 2] - clipped[0, 0] >= 1 and clipped[0, 3] - clipped[0, 1] >= 1):
        raise InputError(f"box {list(box)} lies outside the image {name} ({w}x{h} pixels)")
    return crop_boxes(image, clipped, crop_size)[0], float(box_area(clipped)[0])


def query_crop(image_path: Path, box: Box | None, crop_size: int, reader=read_image) -> tuple[np.ndarray, float]:
    """The query crop (and its box area): a box of an image file, or the whole image when no box is
    given; ``reader``: how the image is read (``stages.crops.image_reader``: EXIF-oriented for
    photo folders)."""
    if not Path(image_path).is_file():
        raise MissingInputError(f"cannot read image {image_path}: no such file")
    image = reader(image_path)
    if image is None:
        raise InputError(f"cannot read image {image_path} (unreadable or not an image)")
    return crop_query(image, box, crop_size, str(image_path))


class Embedder:
    """A loaded embedding model (``model``: trained, ``pretrained``: its untrained backbone)."""

    def __init__(self, net, input_size: int):
        self.net = net
        self.input_size = int(input_size)

    @torch.no_grad()
    def embed(self, crops: list[np.ndarray], areas: list[float]) -> np.ndarray:
        """RGB uint8 crops and their box areas (pixels of their images) -> L2-normalised float32
        vectors ``[n, d]`` (C-contiguous, for FAISS)."""
        x = crops_to_tensor(crops, self.input_size).float().div_(255)
        vectors = self.net.embed(x, torch.as_tensor(np.asarray(areas, np.float64)))
        return np.ascontiguousarray(vectors.float().numpy(), dtype=np.float32)


def load_embedder(model_path: Path, embedding: str) -> Embedder:
    """The ``embedding`` ('model' or 'pretrained') net of a saved model file."""
    if embedding not in layout.EMBEDDINGS:
        raise InputError(f"embedding must be one of {list(layout.EMBEDDINGS)}, got {embedding!r}")
    model, meta = load_model(model_path)
    if embedding == "pretrained":
        model = pretrained_model(meta)
    return Embedder(model, meta["input_size"])


class Gallery:
    """One built gallery index: FAISS rows -> objects (gallery.parquet, same order) -> images (test.json)."""

    def __init__(self, index, objects: pd.DataFrame, images: pd.DataFrame):
        if index.ntotal != len(objects):
            raise InputError(
                f"the index holds {index.ntotal} vectors but gallery.parquet {len(objects)} objects: rebuild the index"
            )
        self.index = index
        self.objects = objects.reset_index(drop=True)
        self.images = images
        self._object_id = self.objects["object_id"].to_numpy(np.int64)
        self._image_id = self.objects["image_id"].to_numpy(np.int64)
        self._boxes = self.objects[BOX_COLUMNS].to_numpy(np.float64)
        paths = images.set_index("image_id")["path"]
        self._path = paths.reindex(self._image_id).fillna("?").astype(str).to_numpy()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and rows ``[n, min(k, size)]`` of the nearest gallery objects."""
        q = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        return self.index.search(q, max(1, min(int(k), self.size)))

    def hits(self, dist: np.ndarray, rows: np.ndarray, offset: int = 0) -> list[Hit]:
        """One query's result rows as hits ranked from ``offset + 1`` (rows < 0, FAISS padding, dropped)."""
        dist, rows = np.asarray(dist).reshape(-1), np.asarray(rows).reshape(-1)
        keep = rows >= 0
        ranks = np.arange(offset + 1, offset + 1 + len(rows))[keep]
        rows, d = rows[keep], np.sqrt(np.maximum(dist[keep], 0.0))
        return [
            Hit(int(rk), int(o), int(i), str(p), (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(dd))
            for rk, o, i, p, b, dd in zip(
                ranks, self._object_id[rows], self._image_id[rows], self._path[rows], self._boxes[rows], d
            )
        ]

    def nearest(self, vector: np.ndarray, k: int, offset: int = 0, exclude_image: int | None = None) -> list[Hit]:
        """Hits ``offset + 1 .. offset + k`` of one query vector; with ``exclude_image``, the objects
        of that image are left out of the ranking (as ``evaluate.exclude_same_image`` does)."""
        if exclude_image is None:
            dist, rows = self.search(vector, offset + k)
            return self.hits(dist[0, offset:], rows[0, offset:], offset)
        same = int(np.count_nonzero(self._image_id == exclude_image))
        dist, rows = self.search(vector, offset + k + same)  # enough rows left once that image's are dropped
        keep = (rows[0] >= 0) & (self._image_id[np.maximum(rows[0], 0)] != exclude_image)
        dist, rows = dist[0, keep][offset : offset + k], rows[0, keep][offset : offset + k]
        return self.hits(dist, rows, offset)


def index_file(index_dir: Path, embedding: str) -> Path:
    """The FAISS file of one embedding of a built index."""
    return Path(index_dir) / embedding / "gallery.faiss"


def gallery_objects(index_dir: Path) -> pd.DataFrame:
    """The gallery objects of a built index, in FAISS row order: object_id, image_id, x1 y1 x2 y2, score."""
    path = Path(index_dir) / "gallery.parquet"
    if not path.exists():
        raise MissingInputError(f"no gallery table at {path}: build the index first with `dvc repro`")
    return pd.read_parquet(path, columns=["object_id", "image_id", *BOX_COLUMNS, "score"])


def gallery_images(dataset_dir: Path) -> pd.DataFrame:
    """The gallery's images (the test split): image_id, path, width, height."""
    return load_split(Path(dataset_dir) / "test.json").images


def load_index(index_dir: Path, embedding: str, params: IndexParams):
    """Read (never write) one embedding's FAISS index with its search knobs set."""
    path = index_file(index_dir, embedding)
    if not path.exists():
        raise MissingInputError(f"no index at {path}: build it first with `dvc repro` (or `python -m stages index`)")
    return load_for_search(path, params)


def open_gallery(index_dir: Path, dataset_dir: Path, embedding: str, params: IndexParams) -> Gallery:
    """Read one built index (``<index_dir>/<embedding>/gallery.faiss``), its objects and the test images."""
    index = load_index(index_dir, embedding, params)
    return Gallery(index, gallery_objects(index_dir), gallery_images(dataset_dir))


def search(
    query: tuple[np.ndarray, float], k: int, params: Params, backbone: str, dataset: str, embedding: str = "model"
) -> list[Hit]:
    """The k gallery objects of ``dataset`` nearest to a query (crop RGB uint8, box area: what
    :func:`crop_query` returns), with ``backbone``'s 'model' (trained) or 'pretrained' embedding
    (``params.index`` sets the search knobs)."""
    index_dir = layout.index_dir(backbone, dataset)
    gallery = open_gallery(index_dir, layout.dataset_dir(dataset), embedding, params.index)
    embedder = load_embedder(layout.model_dir(backbone) / "model.pt", embedding)
    crop, area = query
    return gallery.nearest(embedder.embed([crop], [area]), k)


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
        raise InputError(f"cannot write the picture to {path}")
