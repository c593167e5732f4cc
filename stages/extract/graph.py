"""Weight-free object proposals from multi-scale graph-based segmentation.

Pipeline for one image (all steps vectorised with numpy; no Python loop over pixels):

1. Convert to RGB ``uint8`` and downscale (``INTER_AREA``) so the longest side is at
   most ``cfg.max_side``: the *work* image.
2. Segment the work image with Felzenszwalb-Huttenlocher at the finest scale
   ``min(cfg.scales)``.  Its segments are the atoms of everything that follows: per
   atom we keep the pixel count, colour sums (CIE Lab) and bounding box, and per pair
   of touching atoms the length and colour contrast of their shared boundary.
3. Every coarser scale ``k`` is segmented on a pyramid level of the work image,
   downscaled by ``f = sqrt(k_min / k)`` with the scale and ``min_size`` multiplied by
   the pixel-count ratio, so Felzenszwalb's size-dependent threshold ``k / |C|``
   stays that of a full-resolution run at ``k`` (at a fraction of the cost).  Each
   coarse segment is then mapped back onto the atoms by majority vote, so every
   level is a grouping of the same atoms and its boxes keep full-resolution precision.
4. Candidates per level: every region, plus the union of every pair of touching
   regions (whole objects that a level over-splits into two parts), plus the regions
   formed by up to ``_HIER_ROUNDS`` rounds of greedy hierarchical grouping started
   from each level (in each round every pair of mutual best neighbours, by colour and
   boundary contrast with a small-first size term, merges: selective-search-like).
   All region statistics are aggregated from the atoms with ``bincount``.
5. Each candidate gets an objectness score in (0, 1) (see :func:`_score`): a logistic
   function of the region's contrast against a ring around its box (a Fisher-like
   ratio: difference of Lab means over the pooled spread, from integral images), the
   mean colour contrast across its boundary, the fill ratio of its box, the fraction
   of levels that produce exactly the same box (stability), its relative area, and a
   penalty for touching the image border.
6. Identical boxes are merged (best score kept); boxes with a side below
   ``cfg.min_box`` (original pixels) or covering more than ``cfg.max_area_frac`` of the
   image are dropped; the rest are scaled back to the original image, de-duplicated
   with NMS at ``cfg.nms_iou`` and cut to ``cfg.max_objects``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import felzenszwalb

from stages.boxes import nms
from stages.config import GraphExtractorParams
from stages.crops import to_rgb_uint8

__all__ = ["GraphExtractor"]

# Smallest side (pixels) of a pyramid level used for a coarse scale.
_MIN_PYRAMID_SIDE = 24
# Greedy hierarchical grouping from every level: at most this many rounds each.
_HIER_ROUNDS = 10
# Ring around a candidate box for the surround contrast: this fraction of the box's
# longer side on each side, at least _RING_MIN pixels.
_RING_FRAC = 0.25
_RING_MIN = 2
# Candidates passed to NMS: the best scored, this many times cfg.max_objects.
_PRE_NMS = 5
# Objectness logit weights (see _score); Lab colour differences are in Delta-E units.
_W_Z = 2.5
_W_DIFF = 0.25
_W_EDGE = 1.5
_W_FILL = 2.0
_W_STAB = 1.0
_W_BORDER = -0.5
_W_AREA = 0.3
_BIAS = -9.0
# Set to a dict to receive the per-candidate features of the last call (diagnostics).
_DEBUG: dict | None = None


def _empty() -> tuple[np.ndarray, np.ndarray]:
    """No proposals: empty float32 boxes [0, 4] and scores [0]."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


class _Level:
    """A partition of the work image into regions, with region statistics and adjacency.

    Per region: pixel count, Lab colour sum, sum of squared Lab norms, bounding box
    (x1, y1, x2, y2 exclusive, work pixels) and internal perimeter (length and summed
    colour contrast of its boundary with other regions; the image border excluded).
    Per touching pair ``a < b``: shared boundary length and summed contrast.
    """

    count: np.ndarray
    csum: np.ndarray
    sqsum: np.ndarray
    box: np.ndarray
    edge_a: np.ndarray
    edge_b: np.ndarray
    edge_len: np.ndarray
    edge_sum: np.ndarray

    @property
    def n(self) -> int:
        return self.count.shape[0]

    @classmethod
    def from_labels(cls, labels: np.ndarray, lab: np.ndarray, lab_smooth: np.ndarray) -> "_Level":
        """Regions of a label image (labels 0..n-1, each non-empty)."""
        lvl = cls()
        flat = labels.ravel()
        n = int(flat.max()) + 1
        lvl.count = np.bincount(flat, minlength=n).astype(np.float64)
        lab_flat = lab.reshape(-1, 3).astype(np.float64)
        lvl.csum = np.stack([np.bincount(flat, lab_flat[:, c], n) for c in range(3)], axis=1)
        lvl.sqsum = np.bincount(flat, weights=(lab_flat**2).sum(axis=1), minlength=n)
        slices = ndi.find_objects(labels + 1)  # C scan; the list below has one item per region
        box = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices]
        lvl.box = np.array(box, np.int64).reshape(n, 4)

        # Touching pixel pairs (4-connectivity) in different regions.
        a_h, b_h = labels[:, :-1], labels[:, 1:]
        m_h = a_h != b_h
        d_h = np.sqrt(((lab_smooth[:, :-1] - lab_smooth[:, 1:]) ** 2).sum(axis=2))[m_h]
        a_v, b_v = labels[:-1, :], labels[1:, :]
        m_v = a_v != b_v
        d_v = np.sqrt(((lab_smooth[:-1, :] - lab_smooth[1:, :]) ** 2).sum(axis=2))[m_v]
        a = np.concatenate([a_h[m_h], a_v[m_v]])
        b = np.concatenate([b_h[m_h], b_v[m_v]])
        lvl._set_edges(n, a, b, np.ones(a.size), np.concatenate([d_h, d_v]).astype(np.float64))
        return lvl

    def _set_edges(self, n: int, a: np.ndarray, b: np.ndarray, length: np.ndarray, total: np.ndarray) -> None:
        """Sum parallel edges (a, b) into one per unordered region pair."""
        if a.size:
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            keys, inv = np.unique(lo * n + hi, return_inverse=True)
            self.edge_a, self.edge_b = keys // n, keys % n
            self.edge_len = np.bincount(inv, weights=length, minlength=keys.size)
            self.edge_sum = np.bincount(inv, weights=total, minlength=keys.size)
        else:
            self.edge_a = self.edge_b = np.zeros(0, np.int64)
            self.edge_len = self.edge_sum = np.zeros(0, np.float64)

    def merge(self, group: np.ndarray) -> "_Level":
        """The coarser level whose region ``group[i]`` is the union of regions ``i``."""
        lvl = _Level()
        n = int(group.max()) + 1
        lvl.count = np.bincount(group, weights=self.count, minlength=n)
        lvl.csum = np.stack([np.bincount(group, self.csum[:, c], n) for c in range(3)], axis=1)
        lvl.sqsum = np.bincount(group, weights=self.sqsum, minlength=n)
        box = np.empty((n, 4), np.int64)
        box[:, :2] = np.iinfo(np.int64).max
        box[:, 2:] = np.iinfo(np.int64).min
        np.minimum.at(box[:, 0], group, self.box[:, 0])
        np.minimum.at(box[:, 1], group, self.box[:, 1])
        np.maximum.at(box[:, 2], group, self.box[:, 2])
        np.maximum.at(box[:, 3], group, self.box[:, 3])
        lvl.box = box
        ga, gb = group[self.edge_a], group[self.edge_b]
        m = ga != gb
        lvl._set_edges(n, ga[m], gb[m], self.edge_len[m], self.edge_sum[m])
        return lvl

    def regions(self, which: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Candidate statistics of the regions (all, or those selected by ``which``)."""
        n = self.n
        perim_len = np.bincount(self.edge_a, self.edge_len, n) + np.bincount(self.edge_b, self.edge_len, n)
        perim_sum = np.bincount(self.edge_a, self.edge_sum, n) + np.bincount(self.edge_b, self.edge_sum, n)
        out = {
            "box": self.box,
            "count": self.count,
            "csum": self.csum,
            "sqsum": self.sqsum,
            "perim_len": perim_len,
            "perim_sum": perim_sum,
        }
        if which is not None:
            out = {k: v[which] for k, v in out.items()}
        return out

    def pairs(self) -> dict[str, np.ndarray]:
        """Candidate statistics of the union of every pair of touching regions."""
        a, b = self.edge_a, self.edge_b
        r = self.regions()
        box = np.concatenate(
            [np.minimum(self.box[a, :2], self.box[b, :2]), np.maximum(self.box[a, 2:], self.box[b, 2:])], axis=1
        )
        return {
            "box": box,
            "count": self.count[a] + self.count[b],
            "csum": self.csum[a] + self.csum[b],
            "sqsum": self.sqsum[a] + self.sqsum[b],
            "perim_len": r["perim_len"][a] + r["perim_len"][b] - 2 * self.edge_len,
            "perim_sum": r["perim_sum"][a] + r["perim_sum"][b] - 2 * self.edge_sum,
        }

    def merge_step(self) -> tuple[np.ndarray, np.ndarray] | None:
        """One round of greedy grouping: every pair of mutual best neighbours merges.

        Dissimilarity of touching regions: Lab distance of their means plus the mean
        contrast across their shared boundary, times a size term (small regions merge
        first, as in selective search).  Returns ``(group, merged)``: the region -> new
        region map and the ids of the new regions formed by a merge; None if none merges.
        """
        if self.edge_a.size == 0:
            return None
        a, b = self.edge_a, self.edge_b
        mean = self.csum / self.count[:, None]
        colour = np.sqrt(((mean[a] - mean[b]) ** 2).sum(axis=1))
        boundary = self.edge_sum / np.maximum(self.edge_len, 1.0)
        size = (self.count[a] + self.count[b]) / self.count.sum()
        dis = (colour + boundary) * (0.5 + size)
        # Best neighbour of every region (ties: the lower neighbour id).
        ends = np.concatenate([a, b])
        other = np.concatenate([b, a])
        order = np.lexsort((other, np.concatenate([dis, dis]), ends))
        first = np.ones(order.size, bool)
        first[1:] = ends[order][1:] != ends[order][:-1]
        best = np.full(self.n, -1, np.int64)
        best[ends[order][first]] = other[order][first]
        mutual = (best[a] == b) & (best[b] == a)
        if not mutual.any():
            return None
        parent = np.arange(self.n)
        parent[b[mutual]] = a[mutual]
        _, group = np.unique(parent, return_inverse=True)
        return group, group[a[mutual]]


def _majority_group(fine: np.ndarray, n_fine: int, coarse: np.ndarray) -> np.ndarray:
    """Map each fine label to the coarse label covering most of its pixels."""
    h, w = fine.shape
    hc, wc = coarse.shape
    rows = np.minimum(((np.arange(h) + 0.5) * hc / h).astype(np.int64), hc - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * wc / w).astype(np.int64), wc - 1)
    up = coarse[rows[:, None], cols[None, :]].ravel()
    n_coarse = int(coarse.max()) + 1
    key = fine.ravel() * n_coarse + up
    if n_fine * n_coarse <= 4_000_000:
        hist = np.bincount(key, minlength=n_fine * n_coarse).reshape(n_fine, n_coarse)
        group = hist.argmax(axis=1)
    else:
        keys, counts = np.unique(key, return_counts=True)
        f, c = keys // n_coarse, keys % n_coarse
        order = np.lexsort((-counts, f))
        first = np.ones(order.size, bool)
        first[1:] = f[order][1:] != f[order][:-1]
        group = np.zeros(n_fine, np.int64)
        group[f[order][first]] = c[order][first]
    _, group = np.unique(group, return_inverse=True)
    return group


def _box_sums(integral: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Sums of an (h+1, w+1, C) integral image over boxes [N, 4] (x1, y1, x2, y2 exclusive)."""
    x1, y1, x2, y2 = box.T
    return integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]


def _features(cand: dict[str, np.ndarray], integral: np.ndarray, integral_sq: np.ndarray, w: int, h: int):
    """Per-candidate objectness features (work-image pixels, Lab Delta-E units)."""
    box = cand["box"]
    n = cand["count"]
    bw = box[:, 2] - box[:, 0]
    bh = box[:, 3] - box[:, 1]
    area = (bw * bh).astype(np.float64)
    fill = np.clip(n / np.maximum(area, 1.0), 0.0, 1.0)

    # Surround: the box grown by a margin, minus the region itself.
    margin = np.maximum(_RING_MIN, np.round(_RING_FRAC * np.maximum(bw, bh))).astype(np.int64)
    outer = np.stack(
        [
            np.maximum(box[:, 0] - margin, 0),
            np.maximum(box[:, 1] - margin, 0),
            np.minimum(box[:, 2] + margin, w),
            np.minimum(box[:, 3] + margin, h),
        ],
        axis=1,
    )
    outer_area = ((outer[:, 2] - outer[:, 0]) * (outer[:, 3] - outer[:, 1])).astype(np.float64)
    ring_n = outer_area - n
    ring_sum = _box_sums(integral, outer) - cand["csum"]
    ring_sq = _box_sums(integral_sq, outer) - cand["sqsum"]
    has_ring = ring_n > 0.5
    safe_ring = np.where(has_ring, ring_n, 1.0)
    mean_in = cand["csum"] / n[:, None]
    mean_out = ring_sum / safe_ring[:, None]
    var_in = np.maximum(cand["sqsum"] / n - (mean_in**2).sum(axis=1), 0.0)
    var_out = np.maximum(ring_sq / safe_ring - (mean_out**2).sum(axis=1), 0.0)
    diff = np.sqrt(((mean_in - mean_out) ** 2).sum(axis=1))
    diff = np.where(has_ring, diff, 0.0)
    # Difference of means relative to the spread of both sides (a Fisher-like ratio).
    z = diff / np.sqrt(var_in + var_out + 1.0)

    edge = cand["perim_sum"] / np.maximum(cand["perim_len"], 1.0)
    touches_border = (box[:, 0] == 0) | (box[:, 1] == 0) | (box[:, 2] == w) | (box[:, 3] == h)
    return {
        "diff": diff,
        "z": z,
        "edge": edge,
        "fill": fill,
        "area": area / float(w * h),
        "border": touches_border,
    }


def _score(feat: dict[str, np.ndarray], stability: np.ndarray) -> np.ndarray:
    """Objectness in (0, 1): a logistic function of the region features.

    The weights are rounded from a coordinate search maximising the recall of the top
    10..80 proposals on synthetic scenes (the project's own generator, train split,
    and shapes pasted on noise and on photos), a compromise between the two; the bias
    makes the score roughly the probability that a candidate matches an object at
    IoU >= 0.7 on those scenes (calibrated up to ~0.4, flat above).
    """
    logit = (
        _W_Z * np.log1p(feat["z"])
        + _W_DIFF * np.log1p(feat["diff"])
        + _W_EDGE * np.log1p(feat["edge"])
        + _W_FILL * feat["fill"]
        + _W_STAB * stability
        + _W_BORDER * feat["border"]
        + _W_AREA * np.log(np.maximum(feat["area"], 1e-6))
        + _BIAS
    )
    return 1.0 / (1.0 + np.exp(-logit))


@dataclass(frozen=True)
class _WorkImage:
    """The downscaled image that is segmented, its Lab planes and integrals, and its scale."""

    rgb: np.ndarray  # h x w x 3 uint8
    lab: np.ndarray  # CIE Lab, float32
    lab_smooth: np.ndarray  # lab, Gaussian-smoothed (boundary contrasts)
    integral: np.ndarray  # (h+1, w+1, 3) integral image of lab
    integral_sq: np.ndarray  # (h+1, w+1) integral image of the squared Lab norm
    sx: float  # original pixels per work pixel, horizontally
    sy: float  # ... and vertically

    @property
    def h(self) -> int:
        """Height of the work image."""
        return self.rgb.shape[0]

    @property
    def w(self) -> int:
        """Width of the work image."""
        return self.rgb.shape[1]


@dataclass(frozen=True)
class _Candidates:
    """Concatenated candidate statistics, the level of each candidate, and the number of levels."""

    stats: dict[str, np.ndarray]  # box, count, csum, sqsum, perim_len, perim_sum
    level_id: np.ndarray  # the hierarchical grouping counts as one extra level
    n_levels: int


def _lab_planes(work: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """CIE Lab of an RGB uint8 image, raw and Gaussian-smoothed with ``sigma`` (none if 0)."""
    lab = cv2.cvtColor(work.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    lab_smooth = cv2.GaussianBlur(lab, (0, 0), max(sigma, 0.5)) if sigma > 0 else lab
    return lab, lab_smooth


def _level_candidates(levels: list[_Level]) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """Every region and every union of two touching regions of each level, with the level ids."""
    cands, level_id = [], []
    for i, lvl in enumerate(levels):
        for c in (lvl.regions(), lvl.pairs()):
            cands.append(c)
            level_id.append(np.full(c["box"].shape[0], i))
    return cands, level_id


def _hierarchy_candidates(levels: list[_Level]) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """The regions formed by up to _HIER_ROUNDS rounds of greedy grouping from each level."""
    cands, level_id = [], []
    for lvl in levels:
        for _ in range(_HIER_ROUNDS):
            step = lvl.merge_step()
            if step is None:
                break
            group, merged = step
            lvl = lvl.merge(group)
            cands.append(lvl.regions(merged))
            level_id.append(np.full(merged.size, len(levels)))
    return cands, level_id


def _candidates(levels: list[_Level]) -> _Candidates:
    """All candidates of the levels and of their hierarchical grouping, concatenated."""
    cands, level_id = _level_candidates(levels)
    hier, hier_id = _hierarchy_candidates(levels)
    n_levels = len(levels) + 1 if hier else len(levels)
    cands, level_id = cands + hier, level_id + hier_id
    stats = {key: np.concatenate([c[key] for c in cands]) for key in cands[0]}
    return _Candidates(stats=stats, level_id=np.concatenate(level_id), n_levels=n_levels)


def _box_keys(box: np.ndarray, w: int, h: int) -> np.ndarray:
    """One distinct integer per box [N, 4] of a ``w x h`` image (x1, y1, x2, y2 exclusive)."""
    return ((box[:, 0] * (w + 1) + box[:, 2]) * (h + 1) + box[:, 1]) * (h + 1) + box[:, 3]


def _stability(key: np.ndarray, level_id: np.ndarray, n_levels: int) -> np.ndarray:
    """The fraction of levels in which exactly each candidate's box (``key``) occurs."""
    kl = np.unique(key * (n_levels + 1) + level_id)
    ukeys, nlev = np.unique(kl // (n_levels + 1), return_counts=True)
    return nlev[np.searchsorted(ukeys, key)] / n_levels


def _objectness(cand: _Candidates, work: _WorkImage) -> tuple[np.ndarray, np.ndarray]:
    """Score and box key of every candidate (its features go to _DEBUG when that is a dict)."""
    feat = _features(cand.stats, work.integral, work.integral_sq, work.w, work.h)
    box = cand.stats["box"]
    key = _box_keys(box, work.w, work.h)
    stab = _stability(key, cand.level_id, cand.n_levels)
    score = _score(feat, stab)
    if _DEBUG is not None:
        _DEBUG.clear()
        _DEBUG.update(feat, stab=stab, box=box, level=cand.level_id, scale=(work.sx, work.sy))
    return score, key


def _best_per_box(key: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of one candidate per distinct box key: the best scored."""
    order = np.lexsort((-score, key))
    first = np.ones(order.size, bool)
    first[1:] = key[order][1:] != key[order][:-1]
    return order[first]


def _to_original(box: np.ndarray, work: _WorkImage) -> np.ndarray:
    """Boxes [N, 4] scaled from work-image to original-image pixels, float64."""
    return box.astype(np.float64) * np.array([work.sx, work.sy, work.sx, work.sy])


class GraphExtractor:
    """Weight-free object proposals (see the module docstring)."""

    name = "graph"
    processes = True  # CPU-bound and picklable: the local engine runs it in one process per core

    def __init__(self, cfg: GraphExtractorParams | None = None):
        self.cfg = cfg if cfg is not None else GraphExtractorParams()

    # -- helpers -------------------------------------------------------------------
    def _work_image(self, rgb: np.ndarray) -> np.ndarray:
        """The image downscaled (INTER_AREA) so its longest side is at most cfg.max_side."""
        H, W = rgb.shape[:2]
        f = min(1.0, self.cfg.max_side / max(H, W))
        if f >= 1.0:
            return rgb
        size = (max(1, int(round(W * f))), max(1, int(round(H * f))))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def _prepare(self, rgb: np.ndarray) -> _WorkImage:
        """The work image of an RGB uint8 image, with its Lab planes, integrals and scale."""
        work = self._work_image(rgb)
        H, W = rgb.shape[:2]
        h, w = work.shape[:2]
        lab, lab_smooth = _lab_planes(work, self.cfg.sigma)
        return _WorkImage(
            rgb=work,
            lab=lab,
            lab_smooth=lab_smooth,
            integral=cv2.integral(lab.astype(np.float64)),
            integral_sq=cv2.integral((lab.astype(np.float64) ** 2).sum(axis=2)),
            sx=W / w,
            sy=H / h,
        )

    def _coarse_labels(self, work: np.ndarray, k: float, k_min: float) -> np.ndarray:
        """Felzenszwalb labels at scale k on a pyramid level of the work image (see step 3)."""
        cfg = self.cfg
        h, w = work.shape[:2]
        f = math.sqrt(k_min / k) if k > 0 else 1.0
        f = max(f, min(1.0, _MIN_PYRAMID_SIDE / min(h, w)))
        f = min(f, 1.0)
        hc, wc = max(1, int(round(h * f))), max(1, int(round(w * f)))
        if (hc, wc) == (h, w):
            return felzenszwalb(work, scale=k, sigma=cfg.sigma, min_size=cfg.min_size)
        small = cv2.resize(work, (wc, hc), interpolation=cv2.INTER_AREA)
        ratio = (hc * wc) / (h * w)
        return felzenszwalb(
            small,
            scale=k * ratio,
            sigma=cfg.sigma,
            min_size=max(1, int(round(cfg.min_size * ratio))),
        )

    def _levels(self, work: _WorkImage) -> list[_Level]:
        """The atoms (finest scale) and, per coarser scale, the grouping of the atoms it gives."""
        cfg = self.cfg
        scales = sorted(float(s) for s in cfg.scales)
        k_min = scales[0]
        fine = felzenszwalb(work.rgb, scale=k_min, sigma=cfg.sigma, min_size=cfg.min_size).astype(np.int64)
        atoms = _Level.from_labels(fine, work.lab, work.lab_smooth)
        levels = [atoms]
        for k in scales[1:]:
            coarse = self._coarse_labels(work.rgb, k, k_min).astype(np.int64)
            levels.append(atoms.merge(_majority_group(fine, atoms.n, coarse)))
        return levels

    def _size_filter(self, box: np.ndarray, score: np.ndarray, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
        """Drop boxes with a side below cfg.min_box or covering more than cfg.max_area_frac of W x H."""
        cfg = self.cfg
        bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        keep = (bw >= cfg.min_box) & (bh >= cfg.min_box) & (bw * bh <= cfg.max_area_frac * W * H)
        return box[keep], score[keep]

    def _nms_top_k(self, box: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best scored boxes, de-duplicated with NMS at cfg.nms_iou, cut to cfg.max_objects (float32)."""
        cfg = self.cfg
        top = np.argsort(-score, kind="stable")[: _PRE_NMS * cfg.max_objects]
        box, score = box[top], score[top]
        kept = nms(box, score, cfg.nms_iou)[: cfg.max_objects]
        return box[kept].astype(np.float32), score[kept].astype(np.float32)

    # -- API -----------------------------------------------------------------------
    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object proposals for one image.

        image: ``HxWx3`` uint8 RGB (grayscale ``HxW`` and RGBA are converted).
        Returns ``(boxes, scores)``: float32 ``[N, 4]`` x1, y1, x2, y2 in the original
        image's pixel coordinates and float32 ``[N]`` in ``[0, 1]``, sorted by
        descending score, ``N <= cfg.max_objects``.
        """
        rgb = to_rgb_uint8(image)
        H, W = rgb.shape[:2]
        if H < 2 or W < 2:
            return _empty()
        work = self._prepare(rgb)
        cand = _candidates(self._levels(work))
        score, key = _objectness(cand, work)
        sel = _best_per_box(key, score)
        box, score = self._size_filter(_to_original(cand.stats["box"][sel], work), score[sel], W, H)
        if box.shape[0] == 0:
            return _empty()
        return self._nms_top_k(box, score)
