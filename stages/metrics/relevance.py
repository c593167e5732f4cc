"""Which gallery objects are relevant to which query: the ground truth of the retrieval metrics.

Protocol (MS-UGCML, "Evaluation Metrics"): a query is a ground-truth box of class ``c`` in a
test image; the gallery holds class-agnostic extracted boxes of the same test images.

* object level: gallery object ``g`` is relevant to class ``c`` when it has IoU >= 0.3 with some
  ground-truth box of class ``c`` in ``g``'s own image;
* image level: relevant when it overlaps at all (IoU > 1e-10) such a box.

:func:`relevant_classes` turns boxes into a sparse ``[G, C]`` label matrix once per gallery;
:func:`relevance_matrix` looks up a ranked retrieval result ``[Q, K]`` in it.  Both are fully
vectorised (sorting and ``searchsorted``; no Python loop over images, boxes or queries).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from stages.boxes import paired_iou

__all__ = ["ANY_OVERLAP", "relevant_classes", "relevance_matrix", "RelevanceLookup", "drop_same_image"]

#: IoU threshold meaning "any overlap" (image-level relevance): IoU strictly above it.
ANY_OVERLAP = 1e-10


def _same_image_pairs(left_image: np.ndarray, right_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``left_image[i] == right_image[j]`` (a sort-merge join)."""
    order = np.argsort(right_image, kind="stable")
    sorted_right = right_image[order]
    lo = np.searchsorted(sorted_right, left_image, side="left")
    hi = np.searchsorted(sorted_right, left_image, side="right")
    counts = hi - lo
    total = int(counts.sum())
    left_idx = np.repeat(np.arange(left_image.shape[0], dtype=np.int64), counts)
    # position inside each left item's block of matches: 0, 1, ..., counts[i]-1
    starts = np.cumsum(counts) - counts
    within = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    right_idx = order[np.repeat(lo, counts) + within].astype(np.int64, copy=False)
    return left_idx, right_idx


def relevant_classes(
    gallery_image: np.ndarray,
    gallery_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_class: np.ndarray,
    iou_threshold: float,
    *,
    n_classes: int | None = None,
) -> sp.csr_matrix:
    """Classes each gallery object is relevant to, as a boolean CSR matrix ``[G, n_classes]``.

    Entry ``(g, c)`` is true when gallery box ``g`` has IoU >= ``iou_threshold`` with a
    ground-truth box of class ``c`` in the same image (``gallery_image[g] == gt_image[t]``).
    A threshold <= 1e-10 means "any overlap": IoU > 1e-10 (touching boxes do not count).

    ``n_classes`` defaults to ``gt_class.max() + 1`` (0 when there is no ground truth); ground-truth
    classes outside ``[0, n_classes)`` raise ``ValueError``.
    """
    gallery_image = np.asarray(gallery_image, dtype=np.int64).reshape(-1)
    gt_image = np.asarray(gt_image, dtype=np.int64).reshape(-1)
    gt_class = np.asarray(gt_class, dtype=np.int64).reshape(-1)
    gallery_boxes = np.asarray(gallery_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    n_gallery = gallery_image.shape[0]
    if gallery_boxes.shape[0] != n_gallery:
        raise ValueError(f"gallery_boxes has {gallery_boxes.shape[0]} rows, gallery_image {n_gallery}")
    if not (gt_boxes.shape[0] == gt_image.shape[0] == gt_class.shape[0]):
        raise ValueError(
            f"gt_image/gt_boxes/gt_class lengths differ: {gt_image.shape[0]}, {gt_boxes.shape[0]}, {gt_class.shape[0]}"
        )
    if n_classes is None:
        n_classes = int(gt_class.max()) + 1 if gt_class.size else 0
    if gt_class.size and (gt_class.min() < 0 or gt_class.max() >= n_classes):
        raise ValueError(f"gt_class values must lie in [0, {n_classes}), got [{gt_class.min()}, {gt_class.max()}]")

    g_idx, t_idx = _same_image_pairs(gallery_image, gt_image)
    iou = paired_iou(gallery_boxes[g_idx], gt_boxes[t_idx])
    hit = iou > ANY_OVERLAP if iou_threshold <= ANY_OVERLAP else iou >= iou_threshold

    # one entry per distinct (gallery, class): unique keys come out sorted row-major (CSR order)
    keys = np.unique(g_idx[hit] * np.int64(n_classes) + gt_class[t_idx[hit]])
    rows, cols = np.divmod(keys, np.int64(max(n_classes, 1)))
    indptr = np.zeros(n_gallery + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_gallery), out=indptr[1:])
    return sp.csr_matrix(
        (np.ones(keys.shape[0], dtype=bool), cols.astype(np.int64), indptr),
        shape=(n_gallery, n_classes),
    )


def _label_keys(labels: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows, columns and sorted unique keys ``row * C + col`` of the true entries of ``labels``."""
    coo = sp.coo_matrix(labels)
    n_cls = int(coo.shape[1])
    nz = coo.data.astype(bool)
    rows = coo.row[nz].astype(np.int64)
    cols = coo.col[nz].astype(np.int64)
    keys = np.unique(rows * n_cls + cols)
    rows, cols = np.divmod(keys, max(n_cls, 1))
    return rows, cols, keys, n_cls


def _lookup(sorted_keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each ``query`` value in ``sorted_keys`` and whether it is there."""
    if sorted_keys.size == 0:
        return np.zeros(query.shape, dtype=np.int64), np.zeros(query.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, query)
    pos_c = np.minimum(pos, sorted_keys.size - 1)
    return pos_c, (pos < sorted_keys.size) & (sorted_keys[pos_c] == query)


def drop_same_image(ranked: np.ndarray, query_image: np.ndarray, gallery_image: np.ndarray) -> np.ndarray:
    """``ranked`` without the items of each query's own image: later items shift left, the tail is -1."""
    ranked = np.asarray(ranked, dtype=np.int64)
    valid = ranked >= 0
    same = valid & (gallery_image[np.where(valid, ranked, 0)] == query_image[:, None])
    keep = valid & ~same
    # stable argsort on "dropped" moves kept items to the front in their original order
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(ranked, order, axis=1), -1)


class RelevanceLookup:
    """A gallery's relevance labels prepared once, looked up for any number of query chunks.

    ``labels`` is the ``[G, C]`` output of :func:`relevant_classes`; ``gallery_image`` the image
    of each gallery row (needed to exclude a query's own image).  Preparation sorts the true
    entries once (``O(nnz log nnz)``); each lookup is a ``searchsorted`` of the chunk's ``[Q, K]``
    ranks, so a streamed evaluation costs the same as one over all queries at once.
    """

    def __init__(self, labels: sp.spmatrix, gallery_image: np.ndarray | None = None):
        rows, cols, self.keys, self.n_cls = _label_keys(labels)
        self.n_gallery = int(labels.shape[0])
        self.per_class = np.bincount(cols, minlength=self.n_cls).astype(np.int64)
        self.gallery_image = None
        if gallery_image is not None:
            self.gallery_image = np.asarray(gallery_image, dtype=np.int64).reshape(-1)
            if self.gallery_image.shape[0] != self.n_gallery:
                raise ValueError(
                    f"gallery_image has {self.gallery_image.shape[0]} entries for {self.n_gallery} gallery rows"
                )
            # relevant items per (image, class), to subtract a query's own image
            self.images = np.unique(self.gallery_image)
            img_idx = np.searchsorted(self.images, self.gallery_image[rows])
            self.pair_keys, self.pair_counts = np.unique(img_idx * np.int64(self.n_cls) + cols, return_counts=True)

    def __call__(
        self,
        ranked: np.ndarray,
        query_class: np.ndarray,
        query_image: np.ndarray | None = None,
        exclude_same_image: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rel, n_relevant_total, ranked)`` of one chunk; see :func:`relevance_matrix`.

        The returned ``ranked`` is the list the metrics score: the input, or with
        ``exclude_same_image`` the input without the query's own image (-1 padded).
        """
        ranked = np.asarray(ranked, dtype=np.int64)
        if ranked.ndim != 2:
            raise ValueError(f"ranked must be [Q, K], got shape {ranked.shape}")
        n_q = ranked.shape[0]
        query_class = np.asarray(query_class, dtype=np.int64).reshape(-1)
        if query_class.shape[0] != n_q:
            raise ValueError(f"query_class has {query_class.shape[0]} entries for {n_q} queries")
        if ranked.size and ranked.max() >= self.n_gallery:
            raise ValueError(f"ranked holds gallery index {ranked.max()} >= gallery size {self.n_gallery}")
        n_cls = self.n_cls
        class_ok = (query_class >= 0) & (query_class < n_cls)
        safe_class = np.clip(query_class, 0, max(n_cls - 1, 0))
        n_total = np.where(class_ok, self.per_class[safe_class] if n_cls else 0, 0).astype(np.int64).reshape(n_q)

        if exclude_same_image:
            if query_image is None or self.gallery_image is None:
                raise ValueError("exclude_same_image needs query_image and gallery_image")
            query_image = np.asarray(query_image, dtype=np.int64).reshape(-1)
            if query_image.shape[0] != n_q:
                raise ValueError("query_image must be [Q]")
            ranked = drop_same_image(ranked, query_image, self.gallery_image)
            q_img_pos, q_img_found = _lookup(self.images, query_image)
            pos, found_pair = _lookup(self.pair_keys, q_img_pos * np.int64(n_cls) + safe_class)
            own = np.where(
                found_pair & q_img_found & class_ok, self.pair_counts[pos] if self.pair_counts.size else 0, 0
            )
            n_total = n_total - own.astype(np.int64)

        valid = ranked >= 0
        _, found = _lookup(self.keys, np.where(valid, ranked, 0) * np.int64(n_cls) + query_class[:, None])
        rel = found & valid & class_ok[:, None]
        return rel, n_total, ranked


def relevance_matrix(
    ranked: np.ndarray,
    query_class: np.ndarray,
    labels: sp.spmatrix,
    query_image: np.ndarray | None = None,
    gallery_image: np.ndarray | None = None,
    exclude_same_image: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of each returned gallery item, and each query's relevant total in the gallery.

    ``ranked`` is ``[Q, K]`` gallery row indices (a FAISS ``I``; ``-1`` = empty slot), ``labels`` the
    ``[G, C]`` output of :func:`relevant_classes`.  Returns ``(rel, n_relevant_total)``:

    * ``rel``: bool ``[Q, K]``, ``rel[q, k]`` true when the k-th returned item is relevant to class
      ``query_class[q]``; empty slots are False.  With ``exclude_same_image`` the items from the
      query's own image are removed and later items shift left (the list keeps width K, its tail
      padded with False).
    * ``n_relevant_total``: int64 ``[Q]``, how many gallery items are relevant to the query in the
      whole gallery (minus those in the query's own image when excluding).

    Query classes outside ``[0, C)`` have no relevant item.  For many query chunks against one
    gallery, build a :class:`RelevanceLookup` once instead.
    """
    if exclude_same_image and (query_image is None or gallery_image is None):
        raise ValueError("exclude_same_image needs query_image and gallery_image")
    lookup = RelevanceLookup(labels, gallery_image if exclude_same_image else None)
    rel, total, _ = lookup(ranked, query_class, query_image, exclude_same_image)
    return rel, total
