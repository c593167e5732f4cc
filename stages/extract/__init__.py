"""The extract stage: class-agnostic object proposals of every image into Parquet shards.

Extractors share one interface, ``propose(image RGB uint8) -> (boxes xyxy [N,4], scores [N])``,
and are looked up by name in :data:`EXTRACTORS`.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Protocol

import numpy as np
from tqdm import tqdm

from stages import layout
from stages.boxes import box_area, clip_boxes, valid_boxes
from stages.config import ExtractParams, Params
from stages.data.table import load_split
from stages.extract.crops import crop_boxes, encode_crop, read_image
from stages.shards import ShardWriter, objects_table, shard_paths

log = logging.getLogger(__name__)


class Extractor(Protocol):
    name: str

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _graph(cfg: ExtractParams) -> Extractor:
    from stages.extract.graph import GraphExtractor

    return GraphExtractor(cfg.graph)


EXTRACTORS: dict[str, Callable[[ExtractParams], Extractor]] = {"graph": _graph}


def build_extractor(cfg: ExtractParams) -> Extractor:
    try:
        return EXTRACTORS[cfg.extractor](cfg)
    except KeyError:
        raise ValueError(f"unknown extractor {cfg.extractor!r}; valid: {sorted(EXTRACTORS)}") from None


def image_objects(image: np.ndarray, extractor: Extractor, cfg: ExtractParams) -> dict:
    """Proposals of one image as column arrays (boxes clipped, degenerate ones dropped)."""
    h, w = image.shape[:2]
    boxes, scores = extractor.propose(image)
    boxes = clip_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), w, h)
    keep = valid_boxes(boxes, min_side=1.0)
    boxes, scores = boxes[keep], np.asarray(scores, dtype=np.float32).reshape(-1)[keep]
    crops = [encode_crop(c, cfg.crop_format) for c in crop_boxes(image, boxes, cfg.crop_size)]
    return {"boxes": boxes, "scores": scores, "crops": crops}


def run(params: Params, dataset: str | None = None) -> None:
    name = params.dataset(dataset)
    cfg = params.extract
    extractor = build_extractor(cfg)
    out = layout.objects_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*.parquet")) + list(out.glob("*.tmp")):
        stale.unlink()
    summary: dict = {"extractor": cfg.extractor, "splits": {}}
    next_id = 0
    splits = layout.dataset_splits(name)
    if not splits:
        raise FileNotFoundError(f"no dataset tables in {layout.dataset_dir(name)}; run the data stage")
    for split in splits:
        table = load_split(layout.dataset_dir(name) / f"{split}.json")
        writer = ShardWriter(out, split, cfg.shard_rows)
        skipped: list[str] = []
        n_objects = 0
        bar = tqdm(table.images.itertuples(index=False), total=len(table.images), desc=f"extract {split}", unit="img")
        for im in bar:
            image = read_image(im.path)
            if image is None:
                log.warning("extract: skipping unreadable image %s", im.path)
                skipped.append(im.path)
                continue
            objs = image_objects(image, extractor, cfg)
            n = len(objs["scores"])
            if n:
                b = objs["boxes"]
                writer.add(
                    objects_table(
                        {
                            "object_id": np.arange(next_id, next_id + n),
                            "image_id": np.full(n, im.image_id),
                            "split": [split] * n,
                            "x1": b[:, 0], "y1": b[:, 1], "x2": b[:, 2], "y2": b[:, 3],
                            "area": box_area(b),
                            "score": objs["scores"],
                            "crop": objs["crops"],
                            "extractor": [extractor.name] * n,
                        }
                    )
                )
            next_id += n
            n_objects += n
            bar.set_postfix(obj_per_img=f"{n_objects / max(1, bar.n + 1 - len(skipped)):.1f}")
        writer.close()
        done = len(table.images) - len(skipped)
        summary["splits"][split] = {
            "images": int(done),
            "skipped_images": len(skipped),
            "skipped": skipped[:100],
            "objects": int(n_objects),
            "objects_per_image": round(n_objects / max(1, done), 2),
            "shards": len(shard_paths(out, split)),
        }
        log.info("extract: %s: %d objects from %d images (%d skipped)", split, n_objects, done, len(skipped))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
