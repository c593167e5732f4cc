"""What an extractor returns for one image, and the per-image columns the shards are built from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.boxes import box_area, clip_boxes, valid_boxes
from stages.crops import crop_boxes, encode_crop

__all__ = ["Proposals", "as_proposals", "image_objects"]


@dataclass(frozen=True)
class Proposals:
    """Object proposals of one image: ``boxes`` xyxy in pixels ``[N, 4]``, ``scores`` ``[N]``;
    optionally ``stability`` ``[N]`` (SAM's stability score) and ``masks`` (COCO RLE JSON strings)."""

    boxes: np.ndarray
    scores: np.ndarray
    stability: np.ndarray | None = None
    masks: list[str] | None = None


def as_proposals(result) -> Proposals:
    """Accept an extractor's :class:`Proposals` or its plain ``(boxes, scores)`` pair."""
    if isinstance(result, Proposals):
        return result
    boxes, scores = result
    return Proposals(boxes=boxes, scores=scores)


def image_objects(image: np.ndarray, extractor, crop_size: int, crop_format: str) -> dict:
    """Proposals of one image as column arrays (boxes clipped, degenerate ones dropped) with their
    encoded crops: ``boxes, area, scores, stability, masks, crops``."""
    h, w = image.shape[:2]
    p = as_proposals(extractor.propose(image))
    boxes = clip_boxes(np.asarray(p.boxes, dtype=np.float64).reshape(-1, 4), w, h)
    keep = np.flatnonzero(valid_boxes(boxes, min_side=1.0))
    n_all = len(boxes)
    stability = np.full(n_all, np.nan, np.float32) if p.stability is None else np.asarray(p.stability, np.float32)
    masks = None if p.masks is None else [p.masks[i] for i in keep]
    boxes = boxes[keep]
    crops = [encode_crop(c, crop_format) for c in crop_boxes(image, boxes, crop_size)] if len(boxes) else []
    return {
        "boxes": boxes,
        "area": box_area(boxes),
        "scores": np.asarray(p.scores, dtype=np.float32).reshape(-1)[keep],
        "stability": stability.reshape(-1)[keep],
        "masks": masks,
        "crops": crops,
    }
