"""Pure box geometry on numpy arrays.

Boxes are float arrays of shape ``[N, 4]`` in ``x1, y1, x2, y2`` pixel coordinates
(``x2``/``y2`` exclusive, so a box's width is ``x2 - x1``).  Every function is
vectorised; none loops over boxes in Python.  Inputs may be lists or any numeric
array; outputs are float64 unless stated otherwise.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "box_area",
    "box_iou",
    "paired_iou",
    "clip_boxes",
    "valid_boxes",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "nms",
]


def _as_boxes(b) -> np.ndarray:
    """Return ``b`` as a float64 ``[N, 4]`` array (an empty input gives ``(0, 4)``)."""
    arr = np.asarray(b, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {arr.shape}")
    return arr


def box_area(b) -> np.ndarray:
    """Area ``[N]`` of each box; inverted (negative-size) boxes have area 0."""
    b = _as_boxes(b)
    w = np.clip(b[:, 2] - b[:, 0], 0.0, None)
    h = np.clip(b[:, 3] - b[:, 1], 0.0, None)
    return w * h


def _safe_ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU ``[N, M]`` between boxes ``a [N, 4]`` and ``b [M, 4]``.

    A pair whose union is empty (both boxes degenerate) has IoU 0.
    """
    a = _as_boxes(a)
    b = _as_boxes(b)
    area_a = box_area(a)
    area_b = box_area(b)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return _safe_ratio(inter, union)


def paired_iou(a, b) -> np.ndarray:
    """Elementwise IoU ``[N]`` of row ``i`` of ``a`` with row ``i`` of ``b``."""
    a = _as_boxes(a)
    b = _as_boxes(b)
    if a.shape != b.shape:
        raise ValueError(f"paired_iou needs equal shapes, got {a.shape} and {b.shape}")
    ix1 = np.maximum(a[:, 0], b[:, 0])
    iy1 = np.maximum(a[:, 1], b[:, 1])
    ix2 = np.minimum(a[:, 2], b[:, 2])
    iy2 = np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    union = box_area(a) + box_area(b) - inter
    return _safe_ratio(inter, union)


def clip_boxes(b, width: float, height: float) -> np.ndarray:
    """Clip boxes ``[N, 4]`` to the image rectangle ``[0, width] x [0, height]``."""
    b = _as_boxes(b).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0.0, float(width))
    b[:, 1::2] = np.clip(b[:, 1::2], 0.0, float(height))
    return b


def valid_boxes(b, min_side: float = 1.0) -> np.ndarray:
    """Boolean mask ``[N]``: all coordinates finite and both sides ``>= min_side``."""
    b = _as_boxes(b)
    finite = np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore"):
        w_ok = (b[:, 2] - b[:, 0]) >= min_side
        h_ok = (b[:, 3] - b[:, 1]) >= min_side
    return finite & w_ok & h_ok


def xywh_to_xyxy(b) -> np.ndarray:
    """``x, y, w, h`` -> ``x1, y1, x2, y2``."""
    b = _as_boxes(b).copy()
    b[:, 2:] = b[:, :2] + b[:, 2:]
    return b


def xyxy_to_xywh(b) -> np.ndarray:
    """``x1, y1, x2, y2`` -> ``x, y, w, h``."""
    b = _as_boxes(b).copy()
    b[:, 2:] = b[:, 2:] - b[:, :2]
    return b


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Returns the int64 indices of the kept boxes, sorted by descending score.  Boxes
    overlapping a higher-scored kept box with IoU ``> iou_threshold`` are dropped.
    Uses :func:`torchvision.ops.nms`.
    """
    boxes = _as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)

    import torch
    from torchvision.ops import nms as _tv_nms

    keep = _tv_nms(
        torch.from_numpy(boxes.astype(np.float32)),
        torch.from_numpy(scores.astype(np.float32)),
        float(iou_threshold),
    )
    return keep.numpy().astype(np.int64)
