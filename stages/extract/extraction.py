"""Resumable extraction of image tables into Parquet object shards (shared by every engine).

An engine turns a table of images (``image_id, path``) into :class:`ImageResult` s in table order;
:func:`extract_split` numbers the objects, writes shards (atomically, whole images per shard) and
records each completed shard in the manifest (:mod:`stages.extract.resume`), so a rerun after a
crash skips every image of the completed shards and numbers the rest exactly as an uninterrupted
run would: object ids follow the image order of the tables, split after split.

With ``incremental`` (photo folders, whose tables carry a per-image ``signature``), a rerun on a
changed table is an update, not a restart: :func:`drop_images` removes from their shards the
objects of images that left the table or whose signature changed, then only the images no shard
covers are extracted, into new shards, with new ids.  Unchanged images keep their objects and
object ids; ids of removed objects are never given again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from stages.atomic import atomic_path, write_json
from stages.config import ExtractParams
from stages.extract.local import ImageResult
from stages.extract.resume import SUMMARY, Manifest, ShardRecord, SplitRecord, open_manifest
from stages.shards import OBJECT_SCHEMA, ShardWriter, objects_table

log = logging.getLogger(__name__)

__all__ = ["drop_images", "extract_dataset", "extract_split", "Engine"]

# An engine: (images still to extract) -> their results, in table order.
Engine = Callable[[pd.DataFrame], Iterable[ImageResult]]


def _rows(result: ImageResult, split: str, first_id: int, extractor_name: str) -> dict:
    objs = result.objects
    n = len(objs["scores"])
    b = objs["boxes"]
    return {
        "object_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "image_id": np.full(n, result.image_id, dtype=np.int64),
        "split": [split] * n,
        "x1": b[:, 0],
        "y1": b[:, 1],
        "x2": b[:, 2],
        "y2": b[:, 3],
        "area": objs["area"],
        "score": objs["scores"],
        "stability": objs["stability"],
        "crop": objs["crops"],
        "mask_rle": objs["masks"],
        "extractor": [extractor_name] * n,
    }


def extract_split(
    images: pd.DataFrame,
    objects_dir: Path,
    split: str,
    engine: Engine,
    extractor_name: str,
    cfg: ExtractParams,
    manifest: Manifest,
    first_object_id: int,
    incremental: bool = False,
) -> None:
    """Extract the images of one split that the manifest does not list yet; ``first_object_id`` is
    the first id of the split (used when none of its shards is complete).  ``incremental``: first
    drop the objects of images that are no longer in ``images`` or whose ``signature`` changed."""
    objects_dir = Path(objects_dir)
    rec = manifest.split(split)
    if incremental:
        drop_images(objects_dir, rec, stale_images(rec, images), images, manifest)
    elif rec.complete:
        return
    done = rec.done_images()
    next_id = rec.shards[-1].next_object_id if rec.shards else first_object_id
    todo = images.loc[~images["image_id"].isin(done)]
    if incremental and rec.complete and todo.empty:
        return
    signature = dict(zip(images["image_id"].tolist(), images["signature"].tolist())) if incremental else {}
    writer = ShardWriter(objects_dir, split, cfg.shard_rows, start_index=rec.next_shard_index())
    pending: list[int] = []
    skipped: list[str] = []
    pending_rows = 0
    n_objects = sum(s.rows for s in rec.shards)

    def record(path: Path | None) -> None:
        nonlocal pending, skipped, pending_rows
        sigs = [signature[i] for i in pending] if incremental else None
        rec.shards.append(ShardRecord(path.name if path else None, pending_rows, pending, skipped, next_id, sigs))
        manifest.save(objects_dir)
        pending, skipped, pending_rows = [], [], 0

    bar = tqdm(total=len(images), initial=len(images) - len(todo), desc=f"extract {split}", unit="img")
    results = iter(engine(todo))
    try:
        for result in results:
            pending.append(result.image_id)
            if result.objects is None:
                log.warning("extract: skipping unreadable image %s", result.path)
                skipped.append(result.path)
            else:
                rows = _rows(result, split, next_id, extractor_name)
                n = len(rows["object_id"])
                next_id += n
                n_objects += n
                pending_rows += n
                path = writer.add(objects_table(rows))
                if path is not None:
                    record(path)
            bar.update(1)
            bar.set_postfix(obj_per_img=f"{n_objects / max(1, bar.n):.1f}", refresh=False)
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()  # stop the engine's workers now, not when the generator is collected
    if incremental and todo.empty:  # only removals: no new shard
        rec.complete = True
        manifest.save(objects_dir)
        return
    path = writer.flush()
    if path is None and not any(s.file for s in rec.shards):
        path = writer.close()[-1]  # a split without any object still gets one (empty) shard
    if path is not None or pending:
        record(path)
    rec.complete = True
    manifest.save(objects_dir)


def stale_images(rec: SplitRecord, images: pd.DataFrame) -> np.ndarray:
    """Ids of the images the record covers that left the table or whose signature changed."""
    covered = rec.signatures()
    if not covered:
        return np.zeros(0, np.int64)
    old = pd.Series(covered, dtype=object)
    new = images.set_index("image_id")["signature"].reindex(old.index)
    return old.index[(new != old).to_numpy()].to_numpy(np.int64)


def drop_images(
    objects_dir: Path, rec: SplitRecord, image_ids: np.ndarray, images: pd.DataFrame, manifest: Manifest
) -> int:
    """Remove the objects of ``image_ids`` from the split's shards (rewritten atomically; a shard
    left empty is deleted) and from the manifest; returns the number of objects removed.

    ``images``: the current table; a skipped (unreadable) image stays listed only if it is in it
    and not dropped.  Records keep their ``next_object_id``, so removed ids are never reused."""
    gone = set(np.asarray(image_ids, np.int64).tolist())
    if not gone:
        return 0
    keep_paths = set(images.loc[~images["image_id"].isin(gone), "path"].tolist())
    emptied, removed = [], 0
    for s in rec.shards:
        hit = [i in gone for i in s.images]
        if not any(hit):
            continue
        if s.file:
            path = objects_dir / s.file
            table = pq.read_table(path)
            mask = pc.invert(pc.is_in(table["image_id"], value_set=pa.array(sorted(gone), pa.int64())))
            kept = table.filter(mask)
            removed += table.num_rows - kept.num_rows
            if kept.num_rows:
                with atomic_path(path) as tmp:
                    pq.write_table(kept.cast(OBJECT_SCHEMA), tmp, compression="zstd")
            else:
                emptied.append(path)
                s.file = None
            s.rows = kept.num_rows
        s.images = [i for i, h in zip(s.images, hit) if not h]
        if s.signatures is not None:
            s.signatures = [g for g, h in zip(s.signatures, hit) if not h]
        s.skipped = [p for p in s.skipped if p in keep_paths]
    rec.complete = False
    manifest.save(objects_dir)  # before deleting: a crash leaves an unlisted file, deleted on the next run
    for path in emptied:
        path.unlink()
    log.info("extract: %d images removed or changed: %d objects dropped", len(gone), removed)
    return removed


def split_summary(manifest: Manifest, split: str) -> dict:
    rec = manifest.split(split)
    skipped = [p for s in rec.shards for p in s.skipped]
    images = sum(len(s.images) for s in rec.shards) - len(skipped)
    objects = sum(s.rows for s in rec.shards)
    return {
        "images": images,
        "skipped_images": len(skipped),
        "skipped": skipped[:100],
        "objects": objects,
        "objects_per_image": round(objects / max(1, images), 2),
        "shards": sum(1 for s in rec.shards if s.file),
    }


def extract_dataset(
    tables: Mapping[str, pd.DataFrame],
    objects_dir: Path,
    engine: Engine,
    extractor_name: str,
    cfg: ExtractParams,
    fingerprint: str,
    incremental: bool = False,
) -> dict:
    """Extract every split of ``tables`` (split -> images with ``image_id, path``, and ``signature``
    when ``incremental``) into ``objects_dir``, resuming from its manifest (updating it, when
    ``incremental``); writes and returns ``summary.json``."""
    objects_dir = Path(objects_dir)
    order = list(tables)
    manifest = open_manifest(objects_dir, fingerprint, order)
    for split, images in tables.items():
        first = manifest.next_object_id(order, split)
        extract_split(images, objects_dir, split, engine, extractor_name, cfg, manifest, first, incremental)
    summary = {"extractor": extractor_name, "splits": {s: split_summary(manifest, s) for s in order}}
    for split, s in summary["splits"].items():
        log.info(
            "extract: %s: %d objects from %d images (%d skipped)", split, s["objects"], s["images"], s["skipped_images"]
        )
    write_json(objects_dir / SUMMARY, summary)
    return summary
