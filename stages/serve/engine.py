"""What the server knows and keeps: the built indexes it can open, loaded lazily and cached.

One :class:`Engine` per server. Each model is loaded once per (backbone, embedding), each FAISS
index once per (backbone, dataset, embedding), each gallery table once per (backbone, dataset);
decoded images, encoded pictures and recent query vectors sit in small bounded caches. Nothing
is ever written under the project root: indexes, tables and images are only read.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages import layout
from stages.config import Params
from stages.crops import image_reader
from stages.errors import MissingInputError
from stages.index.search import (
    Embedder,
    Gallery,
    Hit,
    crop_query,
    gallery_images,
    gallery_objects,
    index_file,
    load_embedder,
    load_index,
)
from stages.serve.images import encode_jpeg, page_bounds

MAX_RESULTS = 1000  # deepest rank "more results" can reach


class NotFound(MissingInputError):
    """A request for something the server does not have (HTTP 404)."""


class LRU:
    """A thread-safe mapping that keeps the ``maxsize`` most recently used entries."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class Selection:
    """Which index a request uses: a backbone's model on a dataset, trained or pretrained embedding."""

    backbone: str
    dataset: str
    embedding: str = "model"


@dataclass(frozen=True)
class Query:
    """A searched query vector, kept so that "more results" needs no second embedding."""

    selection: Selection
    vector: np.ndarray
    exclude_image: int | None  # a dataset image whose own objects are left out of the ranking


class ObjectTable:
    """The gallery objects of one (backbone, dataset), grouped by image with one sort."""

    def __init__(self, objects: pd.DataFrame, images: pd.DataFrame):
        order = np.argsort(objects["image_id"].to_numpy(np.int64), kind="stable")
        self.objects = objects.iloc[order].reset_index(drop=True)
        self._image_ids = self.objects["image_id"].to_numpy(np.int64)
        counts = pd.Series(self._image_ids).value_counts()
        self.images = images.assign(
            objects=counts.reindex(images["image_id"].to_numpy()).fillna(0).astype(np.int64).to_numpy()
        ).reset_index(drop=True)
        self._by_id = self.images.set_index("image_id")

    def image(self, image_id: int) -> dict:
        if image_id not in self._by_id.index:
            raise NotFound(f"no image {image_id} in this dataset")
        row = self._by_id.loc[image_id]
        return {
            "image_id": int(image_id),
            "width": int(row["width"]),
            "height": int(row["height"]),
            "objects": int(row["objects"]),
        }

    def path(self, image_id: int) -> str:
        if image_id not in self._by_id.index:
            raise NotFound(f"no image {image_id} in this dataset")
        return str(self._by_id.loc[image_id, "path"])

    def objects_of(self, image_id: int) -> pd.DataFrame:
        lo, hi = np.searchsorted(self._image_ids, [image_id, image_id + 1])
        return self.objects.iloc[lo:hi]

    def sizes(self, image_ids: np.ndarray) -> np.ndarray:
        """``[n, 2]`` (width, height) of images by id (0 for an unknown id)."""
        wh = self._by_id[["width", "height"]].reindex(np.asarray(image_ids, dtype=np.int64))
        return wh.fillna(0).to_numpy(np.int64)


class Engine:
    """The server's state over the project at ``root`` (params, built indexes, models), read-only."""

    def __init__(self, params: Params, root: Path = Path(".")):
        self.params = params
        self.root = Path(root)
        self._lock = threading.RLock()  # one load at a time (loads nest); each key is loaded once
        self._embedders: dict[tuple[str, str], Embedder] = {}
        self._galleries: dict[Selection, Gallery] = {}
        self._tables: dict[tuple[str, str], ObjectTable] = {}
        self._decoded = LRU(16)  # decoded dataset images (a click on the open image reuses it)
        self._pictures = LRU(512)  # encoded JPEGs served to the page
        self._queries = LRU(256)  # recent query vectors, by token

    # -- what exists ---------------------------------------------------------------------------
    def catalog(self) -> list[dict]:
        """Every params (backbone, dataset) pair with a built index: its embeddings and metrics."""
        out = []
        for b in self.params.backbones:
            for d in self.params.datasets:
                idx = self.root / layout.index_dir(b, d)
                embeddings = [e for e in layout.EMBEDDINGS if index_file(idx, e).exists()]
                if not embeddings or not (self.root / layout.dataset_dir(d) / "test.json").exists():
                    continue
                metrics = (self.root / layout.metrics_file(b, d)).exists()
                out.append({"backbone": b, "dataset": d, "embeddings": embeddings, "metrics": metrics})
        return out

    def check(self, selection: Selection) -> Selection:
        """``selection`` if it names a built index of the params' backbones and datasets, else NotFound."""
        for entry in self.catalog():
            if (entry["backbone"], entry["dataset"]) == (selection.backbone, selection.dataset):
                if selection.embedding in entry["embeddings"]:
                    return selection
        raise NotFound(
            f"no built index for backbone {selection.backbone!r}, dataset {selection.dataset!r}, "
            f"embedding {selection.embedding!r} (params backbones x datasets; build it with `dvc repro`)"
        )

    # -- cached loads --------------------------------------------------------------------------
    def table(self, backbone: str, dataset: str) -> ObjectTable:
        key = (backbone, dataset)
        if key not in self._tables:
            with self._lock:
                if key not in self._tables:
                    objects = gallery_objects(self.root / layout.index_dir(backbone, dataset))
                    images = gallery_images(self.root / layout.dataset_dir(dataset))
                    self._tables[key] = ObjectTable(objects, images)
        return self._tables[key]

    def embedder(self, backbone: str, embedding: str) -> Embedder:
        key = (backbone, embedding)
        if key not in self._embedders:
            with self._lock:
                if key not in self._embedders:
                    model = self.root / layout.model_dir(backbone) / "model.pt"
                    if not model.exists():
                        raise NotFound(f"no model at {model}: train it first with `dvc repro`")
                    self._embedders[key] = load_embedder(model, embedding)
        return self._embedders[key]

    def gallery(self, sel: Selection) -> Gallery:
        if sel not in self._galleries:
            with self._lock:
                if sel not in self._galleries:
                    idx = self.root / layout.index_dir(sel.backbone, sel.dataset)
                    index = load_index(idx, sel.embedding, self.params.index)
                    table = self.table(sel.backbone, sel.dataset)
                    self._galleries[sel] = Gallery(index, gallery_objects(idx), table.images)
        return self._galleries[sel]

    def warm_up(self, sel: Selection) -> None:
        """Load what the first query of ``sel`` needs (model, index, tables) and run one query."""
        sel = self.check(sel)
        gallery, embedder = self.gallery(sel), self.embedder(sel.backbone, sel.embedding)
        gallery.nearest(embedder.embed([np.zeros((8, 8, 3), np.uint8)], [64.0]), 1)

    # -- images --------------------------------------------------------------------------------
    def images_page(self, backbone: str, dataset: str, page: int, per_page: int) -> dict:
        table = self.table(backbone, dataset)
        start, stop, pages = page_bounds(len(table.images), page, per_page)
        rows = table.images.iloc[start:stop]
        items = [
            {"image_id": int(i), "width": int(w), "height": int(h), "objects": int(n)}
            for i, w, h, n in zip(rows["image_id"], rows["width"], rows["height"], rows["objects"])
        ]
        return {"page": page, "pages": pages, "total": len(table.images), "images": items}

    def image_detail(self, backbone: str, dataset: str, image_id: int) -> dict:
        table = self.table(backbone, dataset)
        info = table.image(image_id)
        obj = table.objects_of(image_id)
        boxes = obj[["x1", "y1", "x2", "y2"]].to_numpy(np.float64).round(2).tolist()
        info["boxes"] = [
            {"object_id": int(o), "box": b, "score": round(float(s), 4)}
            for o, b, s in zip(obj["object_id"], boxes, obj["score"])
        ]
        return info

    def pixels(self, dataset: str, table: ObjectTable, image_id: int) -> np.ndarray:
        """A dataset image's pixels (as the pipeline reads them: the grid its boxes refer to)."""
        key = (dataset, image_id)
        image = self._decoded.get(key)
        if image is None:
            path = table.path(image_id)
            image = image_reader(dataset)(path)  # photo folders: EXIF-oriented, as their boxes are
            if image is None:
                raise NotFound(f"image {image_id} cannot be read from the dataset")
            self._decoded.put(key, image)
        return image

    def picture(self, backbone: str, dataset: str, image_id: int, max_side: int) -> bytes:
        """JPEG of a dataset image (by id only: the path comes from the dataset's own table)."""
        key = (dataset, image_id, max_side)
        data = self._pictures.get(key)
        if data is None:
            data = encode_jpeg(self.pixels(dataset, self.table(backbone, dataset), image_id), max_side)
            self._pictures.put(key, data)
        return data

    # -- search --------------------------------------------------------------------------------
    def search_box(self, sel: Selection, image_id: int, box, k: int, exclude_image: bool = False) -> dict:
        """Top-k objects for a box of a dataset image (a clicked object or a drawn box); with
        ``exclude_image``, none of that image's own objects."""
        sel = self.check(sel)
        table = self.table(sel.backbone, sel.dataset)
        image = self.pixels(sel.dataset, table, image_id)
        query = crop_query(image, box, self.params.extract.crop_size, f"#{image_id}")
        return self._search(sel, query, k, image_id if exclude_image else None)

    def search_photo(self, sel: Selection, image: np.ndarray, box, k: int) -> dict:
        """Top-k objects for a box of an uploaded photo (RGB uint8), or the whole photo."""
        sel = self.check(sel)
        query = crop_query(image, box, self.params.extract.crop_size, "uploaded")
        return self._search(sel, query, k, None)

    def more(self, token: str, offset: int, k: int) -> dict:
        """Ranks ``offset + 1 ..`` of an earlier query."""
        query = self._queries.get(token)
        if query is None:
            raise NotFound("this query has expired from the server's memory: search again")
        t0 = time.perf_counter()
        return self._result(query, token, offset, k, t0)

    def _search(self, sel: Selection, crop: tuple[np.ndarray, float], k: int, exclude_image: int | None) -> dict:
        t0 = time.perf_counter()
        pixels, area = crop  # what crop_query returns
        vector = self.embedder(sel.backbone, sel.embedding).embed([pixels], [area])
        token = secrets.token_urlsafe(12)
        query = Query(sel, vector, exclude_image)
        self._queries.put(token, query)
        return self._result(query, token, 0, k, t0)

    def _result(self, query: Query, token: str, offset: int, k: int, t0: float) -> dict:
        gallery = self.gallery(query.selection)
        limit = min(MAX_RESULTS, gallery.size)
        offset = max(0, min(int(offset), limit))
        k = max(0, min(int(k), limit - offset))
        hits = gallery.nearest(query.vector, k, offset, query.exclude_image) if k else []
        return {
            "token": token,
            "offset": offset,
            "total": gallery.size,
            "limit": limit,
            **query.selection.__dict__,
            "exclude_image": query.exclude_image,
            "hits": self._hits_json(query.selection, hits),
            "took_ms": round((time.perf_counter() - t0) * 1000, 1),
        }

    def _hits_json(self, sel: Selection, hits: list[Hit]) -> list[dict]:
        if not hits:
            return []
        sizes = self.table(sel.backbone, sel.dataset).sizes(np.asarray([h.image_id for h in hits]))
        return [
            {
                "rank": h.rank,
                "object_id": h.object_id,
                "image_id": h.image_id,
                "box": [round(v, 2) for v in h.box],
                "distance": round(h.distance, 4),
                "width": int(wh[0]),
                "height": int(wh[1]),
            }
            for h, wh in zip(hits, sizes)
        ]

    # -- metrics -------------------------------------------------------------------------------
    def _check_pair(self, backbone: str, dataset: str) -> None:
        if backbone not in self.params.backbones or dataset not in self.params.datasets:
            raise NotFound(f"{backbone!r} / {dataset!r} is not a pair of params backbones x datasets")

    def metrics(self, backbone: str, dataset: str) -> dict:
        """The run's metrics file of (backbone, dataset) and the names of the evaluate stage's pictures."""
        self._check_pair(backbone, dataset)
        path = self.root / layout.metrics_file(backbone, dataset)
        metrics = json.loads(path.read_text()) if path.exists() else None
        return {
            "backbone": backbone,
            "dataset": dataset,
            "file": str(layout.metrics_file(backbone, dataset)),
            "metrics": metrics,
            "pictures": self.pictures(backbone, dataset),
        }

    def pictures(self, backbone: str, dataset: str) -> list[str]:
        self._check_pair(backbone, dataset)
        folder = self.root / layout.plots_dir(backbone, dataset)
        return sorted(p.name for p in folder.glob("*.png") if p.is_file()) if folder.is_dir() else []

    def metrics_picture(self, backbone: str, dataset: str, name: str) -> Path:
        """A picture of the evaluate stage, by a name from :meth:`pictures` (nothing else is served)."""
        if name not in self.pictures(backbone, dataset):
            raise NotFound(f"no picture {name!r} for {backbone} / {dataset}")
        return self.root / layout.plots_dir(backbone, dataset) / name
