"""The index stage: embed gallery objects and query boxes, build FAISS indexes.

Two embeddings are indexed side by side: ``model`` (the trained model) and ``pretrained``
(the same backbone with no training), so every run reports its untrained baseline.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from stages import layout
from stages.boxes import clip_boxes, valid_boxes
from stages.config import Params
from stages.data.table import load_split
from stages.extract.crops import crop_boxes, read_image
from stages.index.embed import crops_to_tensor, decode_to_tensor, embed_tensor
from stages.shards import BOX_COLUMNS, read_objects
from stages.train.model import StudentModel, build_student, load_model, meta_options

log = logging.getLogger(__name__)
EMBEDDINGS = ("model", "pretrained")


def query_crops(params: Params, dataset: str) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Ground-truth boxes of the test images as queries, cropped like the gallery objects."""
    test = load_split(layout.dataset_dir(dataset) / "test.json")
    boxes_by_image = dict(tuple(test.boxes.groupby("image_id", sort=False)))
    rows, crops = [], []
    for im in tqdm(test.images.itertuples(index=False), total=len(test.images), desc="query crops", unit="img"):
        gt = boxes_by_image.get(im.image_id)
        if gt is None:
            continue
        image = read_image(im.path)
        if image is None:
            log.warning("index: skipping queries of unreadable image %s", im.path)
            continue
        b = clip_boxes(gt[BOX_COLUMNS].to_numpy(np.float64), image.shape[1], image.shape[0])
        keep = valid_boxes(b, min_side=1.0)
        if not keep.any():
            continue
        gt = gt[keep].assign(x1=b[keep, 0], y1=b[keep, 1], x2=b[keep, 2], y2=b[keep, 3])
        rows.append(gt)
        crops.extend(crop_boxes(image, b[keep], params.extract.crop_size))
    queries = pd.concat(rows, ignore_index=True) if rows else test.boxes.iloc[:0]
    queries["area"] = (queries["x2"] - queries["x1"]) * (queries["y2"] - queries["y1"])
    return queries.reset_index(drop=True), crops


def pretrained_model(meta: dict) -> StudentModel:
    """The baseline of a saved model: its backbone with the pretrained weights, no head, no training."""
    return build_student(
        meta["backbone"], 0, meta["teacher_dim"], meta["embed_dim"], meta["input_size"], options=meta_options(meta)
    ).eval()


def build_index(vectors: np.ndarray, kind: str) -> faiss.Index:
    if kind != "flat":  # pragma: no cover - guarded by the parameter model
        raise ValueError(f"unknown index type {kind!r}")
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def run(params: Params, backbone: str | None = None, dataset: str | None = None) -> None:
    """Index the test gallery of ``dataset`` with the model of ``backbone`` (defaults: train_on, first backbone)."""
    backbone, dataset = params.backbone(backbone), params.dataset(dataset)
    out = layout.index_dir(backbone, dataset)
    model, meta = load_model(layout.model_dir(backbone) / "model.pt")
    size = meta["input_size"]
    gallery = read_objects(layout.objects_dir(dataset), "test", columns=["object_id", "image_id", *BOX_COLUMNS, "area", "score", "crop"])
    if len(gallery) == 0:
        raise ValueError("the gallery is empty: no objects were extracted from the test images")
    queries, q_crops = query_crops(params, dataset)
    if len(queries) == 0:
        raise ValueError("no queries: the test images have no usable ground-truth boxes")
    g_tensor = decode_to_tensor(gallery["crop"].tolist(), size)
    q_tensor = crops_to_tensor(q_crops, size)
    out.mkdir(parents=True, exist_ok=True)
    gallery.drop(columns="crop").to_parquet(out / "gallery.parquet", index=False)
    queries.to_parquet(out / "queries.parquet", index=False)
    for name, net in zip(EMBEDDINGS, (model, pretrained_model(meta))):
        g = embed_tensor(net.embed, g_tensor, params.index.batch_size, desc=f"embed gallery ({name})")
        q = embed_tensor(net.embed, q_tensor, params.index.batch_size, desc=f"embed queries ({name})")
        (out / name).mkdir(exist_ok=True)
        np.save(out / name / "queries.npy", q)
        faiss.write_index(build_index(g, params.index.type), str(out / name / "gallery.faiss"))
        log.info("index: %s: %d gallery objects, %d queries, %d-d", name, len(g), len(q), g.shape[1])
