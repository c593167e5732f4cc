"""Building blocks of the index stage: embed gallery objects and query boxes, build FAISS indexes.

Streamed: gallery crops are decoded and embedded ``index.chunk_rows`` at a time and written as
embedding shards; the FAISS index is then built shard by shard (IVF-PQ trained on a sample), so
no step holds all crops or all raw vectors (see :mod:`stages.vectors.faiss_index`).

Two embeddings are indexed side by side: ``model`` (the trained model) and ``pretrained``
(the same backbone with no training), so every run reports its untrained baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from stages import layout
from stages.atomic import atomic_path, save_npy, write_json, write_parquet
from stages.boxes import clip_boxes, valid_boxes
from stages.config import Params
from stages.crops import crop_boxes, read_image
from stages.crops.tensors import crops_to_tensor, decode_to_tensor
from stages.errors import InputError, MissingInputError
from stages.index.cache import EmbeddingCache, embedding_key, net_identity, object_keys, save_cache
from stages.index.embed import embed_chunk, iter_encoded_chunks
from stages.model import load_model, pretrained_model
from stages.shards import BOX_COLUMNS, shard_paths
from stages.tables import ImageTable
from stages.vectors.faiss_index import build_from_shards
from stages.vectors.shards import VectorShardWriter, vector_shards

log = logging.getLogger(__name__)


def query_boxes(test: ImageTable) -> pd.DataFrame:
    """The ground-truth boxes used as queries: all but those marked ``"query": false``."""
    boxes = test.boxes
    if "query" in boxes.columns:
        boxes = boxes[boxes["query"].fillna(True).astype(bool).to_numpy()]
    return boxes


def iter_query_crops(
    test: ImageTable, crop_size: int, chunk: int, reader=read_image
) -> Iterator[tuple[pd.DataFrame, list[np.ndarray]]]:
    """Query boxes of the test images, cropped like the gallery objects, ``chunk`` crops at a time.

    Boxes are clipped to their image; boxes left thinner than a pixel and unreadable images are
    skipped. Yields (query rows with the clipped box and its area, crops).
    """
    boxes_by_image = dict(tuple(query_boxes(test).groupby("image_id", sort=False)))
    rows: list[pd.DataFrame] = []
    crops: list[np.ndarray] = []
    for im in tqdm(test.images.itertuples(index=False), total=len(test.images), desc="query crops", unit="img"):
        gt = boxes_by_image.get(im.image_id)
        if gt is None:
            continue
        image = reader(im.path)
        if image is None:
            log.warning("index: skipping queries of unreadable image %s", im.path)
            continue
        b = clip_boxes(gt[BOX_COLUMNS].to_numpy(np.float64), image.shape[1], image.shape[0])
        keep = valid_boxes(b, min_side=1.0)
        if not keep.any():
            continue
        gt = gt[keep].assign(x1=b[keep, 0], y1=b[keep, 1], x2=b[keep, 2], y2=b[keep, 3])
        rows.append(gt.assign(area=(gt["x2"] - gt["x1"]) * (gt["y2"] - gt["y1"])))
        crops.extend(crop_boxes(image, b[keep], crop_size))
        if len(crops) >= chunk:
            yield pd.concat(rows, ignore_index=True), crops
            rows, crops = [], []
    if crops:
        yield pd.concat(rows, ignore_index=True), crops


def embed_gallery(
    objects_dir: Path, nets: dict, out: Path, params: Params, caches: dict[str, EmbeddingCache] | None = None
) -> tuple[int, np.ndarray]:
    """Embed the test objects chunk by chunk (decode, embed with every net, write shards); returns
    their count and their cache keys (:func:`stages.index.cache.object_keys`).

    Writes ``out/gallery.parquet`` (the objects without their crops, in embedding row order) and
    ``out/<name>/gallery-NNNNN.npy`` per net; at most ``index.chunk_rows`` crops are decoded at once.
    ``caches`` (per net): objects found there are not decoded nor embedded again.
    """
    paths = shard_paths(objects_dir, "test")
    if not paths:
        raise MissingInputError(f"no object shards for split 'test' in {objects_dir}; run the extract stage")
    columns = ["object_id", "image_id", *BOX_COLUMNS, "area", "score"]
    writers = {name: VectorShardWriter(out / name, "gallery") for name in nets}
    n, all_keys, embedded = 0, [], dict.fromkeys(nets, 0)
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    size = next(iter(nets.values())).input_size
    with atomic_path(out / "gallery.parquet") as tmp, tqdm(total=total, desc="embed gallery", unit="obj") as bar:
        meta_writer: pq.ParquetWriter | None = None
        for chunk in iter_encoded_chunks(paths, columns + ["crop"], params.index.chunk_rows):
            if not len(chunk):
                continue
            keys = object_keys(chunk)
            all_keys.append(keys)
            rows = {name: (caches or {}).get(name, EmbeddingCache.EMPTY).lookup(keys) for name in nets}
            miss = np.logical_or.reduce([r < 0 for r in rows.values()])
            crops = decode_to_tensor(chunk["crop"][miss].tolist(), size) if miss.any() else None
            for name, net in nets.items():
                own = rows[name] < 0  # the rows this embedding must compute (a subset of miss)
                if own.any():
                    mine = crops if own[miss].all() else crops[torch.from_numpy(own[miss])]
                    fresh = embed_chunk([net], mine, params.index.batch_size, chunk["area"][own])[0]
                    embedded[name] += int(own.sum())
                if own.all():
                    writers[name].add(fresh)
                    continue
                hits = caches[name].gather(rows[name][~own])
                vectors = np.empty((len(chunk), hits.shape[1]), np.float32)
                vectors[~own] = hits
                if own.any():
                    vectors[own] = fresh
                writers[name].add(vectors)
            table = pa.Table.from_pandas(chunk[columns], preserve_index=False)
            meta_writer = meta_writer or pq.ParquetWriter(tmp, table.schema)
            meta_writer.write_table(table)
            n += len(chunk)
            bar.update(len(chunk))
        if meta_writer is None:
            raise InputError("the gallery is empty: no objects were extracted from the test images")
        meta_writer.close()
    if caches is not None:
        done = ", ".join(f"{name} {count} embedded, {n - count} reused" for name, count in embedded.items())
        log.info("index: %d gallery objects (embedding cache: %s)", n, done)
    return n, np.concatenate(all_keys)


def embed_queries(
    test: ImageTable, nets: dict, out: Path, params: Params, dims: dict[str, int] | None = None, reader=read_image
) -> int:
    """Embed the query boxes chunk by chunk into ``out/<name>/queries.npy``; rows in ``out/queries.parquet``.

    A split without any ground-truth box (a photo folder) has no query: empty files are written
    (``dims``: each net's dimension).  ``reader(path)`` reads the test images."""
    rows, vectors = [], {name: [] for name in nets}
    for q_rows, crops in iter_query_crops(test, params.extract.crop_size, params.index.chunk_rows, reader):
        tensor = crops_to_tensor(crops, next(iter(nets.values())).input_size)
        for name, v in zip(nets, embed_chunk(list(nets.values()), tensor, params.index.batch_size, q_rows["area"])):
            vectors[name].append(v)  # queries are GT boxes: thousands, not millions
        rows.append(q_rows)
    if not rows and test.boxes.empty:
        rows = [test.boxes.iloc[:0].assign(area=np.zeros(0))]
        vectors = {name: [np.zeros((0, (dims or {}).get(name, 0)), np.float32)] for name in nets}
    if not rows:
        raise InputError("no queries: the test images have no usable ground-truth boxes")
    queries = pd.concat(rows, ignore_index=True)
    write_parquet(out / "queries.parquet", queries)
    for name, parts in vectors.items():
        save_npy(out / name / "queries.npy", np.concatenate(parts))
    return len(queries)


def build_index_dir(
    out: Path,
    model_path: Path,
    test: ImageTable,
    objects_dir: Path,
    params: Params,
    cache_dir: Path | None = None,
    reader=read_image,
) -> dict:
    """The whole index stage for one model and one dataset's test split, into ``out``.

    ``out/`` gets gallery.parquet, queries.parquet, index.json and, per embedding (``model``,
    ``pretrained``), gallery-NNNNN.npy shards, queries.npy and gallery.faiss.  ``cache_dir``: the
    embedding cache (:mod:`stages.index.cache`), read first and replaced by this run's gallery.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_model(model_path)
    nets = dict(zip(layout.EMBEDDINGS, (model, pretrained_model(meta))))
    for name in nets:
        (out / name).mkdir(exist_ok=True)
    caches = keys = None
    if cache_dir is not None:
        size, batch = meta["input_size"], params.index.batch_size
        keys = {n: embedding_key(net_identity(n, net, model_path), n, size, batch) for n, net in nets.items()}
        caches = {n: EmbeddingCache(Path(cache_dir) / n, keys[n]) for n in nets}
    n_gallery, object_keys_ = embed_gallery(objects_dir, nets, out, params, caches)
    dims = {n: int(np.load(vector_shards(out / n, "gallery")[0], mmap_mode="r").shape[1]) for n in nets}
    n_queries = embed_queries(test, nets, out, params, dims, reader)
    if cache_dir is not None:
        for n in nets:
            save_cache(Path(cache_dir) / n, keys[n], object_keys_, vector_shards(out / n, "gallery"))
    info: dict = {"gallery": n_gallery, "queries": n_queries}
    for name in nets:
        index, kind = build_from_shards(
            vector_shards(out / name, "gallery"), params.index, seed=params.seed, desc=f"index ({name})"
        )
        with atomic_path(out / name / "gallery.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        info[name] = {"type": kind, "dim": int(index.d), "ntotal": int(index.ntotal)}
        log.info(
            "index: %s: %s index of %d gallery objects, %d queries, %d-d", name, kind, index.ntotal, n_queries, index.d
        )
    write_json(out / "index.json", info)
    return info
