"""Which gallery objects are relevant to which query: the ground truth of the retrieval metrics.

Protocol (MS-UGCML, "Evaluation Metrics"): a query is a ground-truth box of class ``c`` in a
test image; the gallery holds class-agnostic extracted boxes of the same test images.

* object level: gallery object ``g`` is relevant to class ``c`` when it has IoU >= 0.3 with a
  ground-truth box of class ``c`` in ``g``'s own image;
* image level: relevant when it overlaps at all (IoU > 1e-10) such a box.

Two labelling rules say which box counts:

* :func:`max_iou_classes` (the authors' ``split_4tasks.py``): a gallery object takes the single
  class of the ground-truth box it overlaps most; it is relevant to that class alone, when that
  IoU passes the threshold.  Ties in IoU go to the ground-truth box listed first.
* :func:`relevant_classes` (multi-label): relevant to *every* class with a box that passes.

Both turn boxes into a sparse ``[G, C]`` label matrix once per gallery; :func:`relevance_matrix`
looks up a ranked retrieval result ``[Q, K]`` in it.  All are vectorised (sorting and
``searchsorted``; no Python loop over images, boxes or queries).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from stages.boxes import paired_iou

__all__ = [
    "ANY_OVERLAP",
    "LABELLING",
    "relevant_classes",
    "max_iou_classes",
    "gallery_labels",
    "relevance_matrix",
    "RelevanceLookup",
    "drop_same_image",
    "own_image_hits",
]

#: IoU threshold meaning "any overlap" (image-level relevance): IoU strictly above it.
ANY_OVERLAP = 1e-10
#: the gallery labelling rules (``evaluate.labelling``)
LABELLING = ("max_iou", "multi_label")


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


def _box_pairs(gallery_image, gallery_boxes, gt_image, gt_boxes, gt_class, n_classes):
    """Checked inputs, and every same-image (gallery, GT) pair with its IoU."""
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
    return n_gallery, int(n_classes), g_idx, t_idx, iou, gt_class


def _passes(iou: np.ndarray, iou_threshold: float) -> np.ndarray:
    """IoU >= threshold; a threshold <= 1e-10 means any overlap (IoU > 1e-10)."""
    return iou > ANY_OVERLAP if iou_threshold <= ANY_OVERLAP else iou >= iou_threshold


def _label_matrix(rows: np.ndarray, cols: np.ndarray, n_gallery: int, n_classes: int) -> sp.csr_matrix:
    """Boolean CSR ``[n_gallery, n_classes]`` with true entries at the distinct ``(rows, cols)``."""
    # one entry per distinct (gallery, class): unique keys come out sorted row-major (CSR order)
    keys = np.unique(rows * np.int64(n_classes) + cols)
    rows, cols = np.divmod(keys, np.int64(max(n_classes, 1)))
    indptr = np.zeros(n_gallery + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_gallery), out=indptr[1:])
    return sp.csr_matrix(
        (np.ones(keys.shape[0], dtype=bool), cols.astype(np.int64), indptr),
        shape=(n_gallery, n_classes),
    )


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
    """Classes each gallery object is relevant to (multi-label), as a boolean CSR matrix ``[G, n_classes]``.

    Entry ``(g, c)`` is true when gallery box ``g`` has IoU >= ``iou_threshold`` with a
    ground-truth box of class ``c`` in the same image (``gallery_image[g] == gt_image[t]``).
    A threshold <= 1e-10 means "any overlap": IoU > 1e-10 (touching boxes do not count).

    ``n_classes`` defaults to ``gt_class.max() + 1`` (0 when there is no ground truth); ground-truth
    classes outside ``[0, n_classes)`` raise ``ValueError``.
    """
    n_gallery, n_classes, g_idx, t_idx, iou, gt_class = _box_pairs(
        gallery_image, gallery_boxes, gt_image, gt_boxes, gt_class, n_classes
    )
    hit = _passes(iou, iou_threshold)
    return _label_matrix(g_idx[hit], gt_class[t_idx[hit]], n_gallery, n_classes)


def max_iou_classes(
    gallery_image: np.ndarray,
    gallery_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_class: np.ndarray,
    iou_threshold: float,
    *,
    n_classes: int | None = None,
) -> sp.csr_matrix:
    """The single class of each gallery object (the authors' labelling), as a boolean CSR ``[G, n_classes]``.

    Gallery box ``g`` takes the class of the ground-truth box of its own image with the largest
    IoU; row ``g`` is true at that class when that IoU passes ``iou_threshold`` (> 1e-10 for a
    threshold <= 1e-10), and empty otherwise.  Ties in IoU go to the ground-truth box that comes
    first (lowest row of ``gt_*``: the order of the dataset's annotations, as the authors' strict
    ``>`` keeps the first).  Arguments as :func:`relevant_classes`.
    """
    n_gallery, n_classes, g_idx, t_idx, iou, gt_class = _box_pairs(
        gallery_image, gallery_boxes, gt_image, gt_boxes, gt_class, n_classes
    )
    # MS-GCML split_4tasks.py (process_pred_box): label = class of the argmax-IoU GT box, first GT on ties
    order = np.lexsort((t_idx, -iou, g_idx))  # per gallery box: largest IoU first, then lowest GT row
    g_sorted = g_idx[order]
    first = np.ones(g_sorted.shape[0], dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    best = order[first]
    hit = _passes(iou[best], iou_threshold)
    return _label_matrix(g_idx[best][hit], gt_class[t_idx[best][hit]], n_gallery, n_classes)


def gallery_labels(rule: str, *args, iou_threshold: float, n_classes: int | None = None) -> sp.csr_matrix:
    """The labels of ``rule`` (:data:`LABELLING`): :func:`max_iou_classes` or :func:`relevant_classes`."""
    if rule == "max_iou":
        return max_iou_classes(*args, iou_threshold, n_classes=n_classes)
    if rule == "multi_label":
        return relevant_classes(*args, iou_threshold, n_classes=n_classes)
    raise ValueError(f"unknown labelling {rule!r}; expected one of {LABELLING}")


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


def drop_same_image(
    ranked: np.ndarray, query_image: np.ndarray, gallery_image: np.ndarray, values: np.ndarray | None = None
):
    """``ranked`` without the items of each query's own image: later items shift left, the tail is -1.

    With ``values`` (e.g. the distances ``[Q, K]`` of ``ranked``), returns ``(ranked, values)``, the
    values moved the same way and their tail ``inf``.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    valid = ranked >= 0
    same = valid & (gallery_image[np.where(valid, ranked, 0)] == query_image[:, None])
    keep = valid & ~same
    # stable argsort on "dropped" moves kept items to the front in their original order
    order = np.argsort(~keep, axis=1, kind="stable")
    kept = np.take_along_axis(keep, order, axis=1)
    shown = np.where(kept, np.take_along_axis(ranked, order, axis=1), -1)
    if values is None:
        return shown
    return shown, np.where(kept, np.take_along_axis(np.asarray(values), order, axis=1), np.inf)


def own_image_hits(
    ranked: np.ndarray, query_image: np.ndarray, gallery_image: np.ndarray, foreground: np.ndarray | None = None
) -> np.ndarray:
    """Bool ``[Q, K]``: the returned item comes from the query's own image (and, with ``foreground``
    ``[G]``, is a foreground object: one that overlaps some ground-truth box).  Empty slots are False."""
    ranked = np.asarray(ranked, dtype=np.int64)
    valid = ranked >= 0
    safe = np.where(valid, ranked, 0)
    hit = valid & (np.asarray(gallery_image)[safe] == np.asarray(query_image).reshape(-1, 1))
    if foreground is not None:
        hit &= np.asarray(foreground, dtype=bool)[safe]
    return hit


class RelevanceLookup:
    """A gallery's relevance labels prepared once, looked up for any number of query chunks.

    ``labels`` is the ``[G, C]`` output of :func:`relevant_classes` or :func:`max_iou_classes`;
    ``gallery_image`` the image of each gallery row (needed to exclude a query's own image).
    Preparation sorts the true entries once (``O(nnz log nnz)``); each lookup is a
    ``searchsorted`` of the chunk's ``[Q, K]`` ranks (a gather of each row's class when no row has
    two labels), so a streamed evaluation costs the same as one over all queries at once.
    """

    def __init__(self, labels: sp.spmatrix, gallery_image: np.ndarray | None = None):
        rows, cols, self.keys, self.n_cls = _label_keys(labels)
        self.n_gallery = int(labels.shape[0])
        self.per_class = np.bincount(cols, minlength=self.n_cls).astype(np.int64)
        per_row = np.bincount(rows, minlength=self.n_gallery)
        #: gallery rows with at least one label (at image level: objects that overlap a GT box)
        self.labelled = per_row > 0
        #: the class of each row (-1: none) when no row has two (max_iou labelling): a lookup is a gather
        self.row_class = None
        if per_row.max(initial=0) <= 1:
            self.row_class = np.full(self.n_gallery, -1, np.int32)
            self.row_class[rows] = cols
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

    def _classes(self, query_class: np.ndarray, n_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        query_class = np.asarray(query_class, dtype=np.int64).reshape(-1)
        if query_class.shape[0] != n_q:
            raise ValueError(f"query_class has {query_class.shape[0]} entries for {n_q} queries")
        class_ok = (query_class >= 0) & (query_class < self.n_cls)
        return query_class, class_ok, np.clip(query_class, 0, max(self.n_cls - 1, 0))

    def relevant(self, ranked: np.ndarray, query_class: np.ndarray) -> np.ndarray:
        """Bool ``[Q, K]``: the returned gallery row is relevant to the query's class (-1 slots: False)."""
        ranked = np.asarray(ranked, dtype=np.int64)
        if ranked.ndim != 2:
            raise ValueError(f"ranked must be [Q, K], got shape {ranked.shape}")
        if ranked.size and ranked.max() >= self.n_gallery:
            raise ValueError(f"ranked holds gallery index {ranked.max()} >= gallery size {self.n_gallery}")
        query_class, class_ok, _ = self._classes(query_class, ranked.shape[0])
        valid = ranked >= 0
        safe = np.where(valid, ranked, 0)
        if self.row_class is not None:
            found = self.row_class[safe] == query_class[:, None]
        else:
            _, found = _lookup(self.keys, safe * np.int64(self.n_cls) + query_class[:, None])
        return found & valid & class_ok[:, None]

    def totals(self, query_class: np.ndarray, query_image: np.ndarray | None = None) -> np.ndarray:
        """Int64 ``[Q]``: relevant gallery items per query; with ``query_image``, those of the
        query's own image left out (the gallery it is ranked against when same-image items are dropped)."""
        query_class = np.asarray(query_class, dtype=np.int64).reshape(-1)
        n_q = query_class.shape[0]
        query_class, class_ok, safe_class = self._classes(query_class, n_q)
        n_total = np.where(class_ok, self.per_class[safe_class] if self.n_cls else 0, 0).astype(np.int64)
        if query_image is None:
            return n_total.reshape(n_q)
        if self.gallery_image is None:
            raise ValueError("leaving out the query's own image needs gallery_image")
        query_image = np.asarray(query_image, dtype=np.int64).reshape(-1)
        if query_image.shape[0] != n_q:
            raise ValueError("query_image must be [Q]")
        q_img_pos, q_img_found = _lookup(self.images, query_image)
        pos, found_pair = _lookup(self.pair_keys, q_img_pos * np.int64(self.n_cls) + safe_class)
        own = np.where(found_pair & q_img_found & class_ok, self.pair_counts[pos] if self.pair_counts.size else 0, 0)
        return (n_total - own.astype(np.int64)).reshape(n_q)

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
        if exclude_same_image:
            if query_image is None or self.gallery_image is None:
                raise ValueError("exclude_same_image needs query_image and gallery_image")
            query_image = np.asarray(query_image, dtype=np.int64).reshape(-1)
            if query_image.shape[0] != ranked.shape[0]:
                raise ValueError("query_image must be [Q]")
            ranked = drop_same_image(ranked, query_image, self.gallery_image)
        total = self.totals(query_class, query_image if exclude_same_image else None)
        if total.shape[0] != ranked.shape[0]:
            raise ValueError(f"query_class has {total.shape[0]} entries for {ranked.shape[0]} queries")
        return self.relevant(ranked, query_class), total, ranked


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
