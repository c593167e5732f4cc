"""The embedded default dataset: deterministic synthetic scenes for object retrieval.

Every scene is a real photograph from :mod:`skimage.data` (randomly cropped, flipped,
re-lit and toned down) with a handful of labelled objects and unlabelled clutter drawn
on top.  A class is a combination of **shape x texture x colour** (e.g.
``red-striped-star``); instances vary in rotation, aspect ratio (+-20 %), colour
(small jitter) and texture phase/period.  Object sizes follow a truncated power law,
so most objects are small and a few are large, as in real photos.

Objects are painted in sequence, so later objects (and clutter) may occlude earlier
ones.  An instance-id mask is tracked while painting; each annotation describes the
*visible* part of its object (tight box, visible pixel count).  Objects that end up
less than 30 % visible, or with fewer than 4 visible pixels, are left unannotated.

The output is COCO-format (``bbox`` is ``[x, y, w, h]`` in pixels).  The same
``(cfg, split, seed)`` always gives byte-identical PNGs and an identical dict; every
image has its own random stream derived from ``(seed, split, image_id)``, so the
first k images do not depend on how many images are rendered.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from stages.config import SyntheticParams

# --------------------------------------------------------------------------- classes

#: Well separated colours (RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 30),
    "green": (35, 170, 55),
    "cyan": (30, 205, 225),
    "blue": (35, 65, 215),
    "purple": (135, 45, 195),
    "pink": (250, 120, 195),
}
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered", "gradient")
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "ring",
    "crescent",
    "heart",
    "arrow",
)

MIN_VISIBLE_FRACTION = 0.3  # annotations below this visible/drawn ratio are dropped
MIN_VISIBLE_PIXELS = 4  # ... and those with fewer visible pixels
_SHIFT = 4  # sub-pixel bits of cv2.fillPoly
_SCALE = float(1 << _SHIFT)


@lru_cache(maxsize=None)
def _class_table(n_classes: int) -> tuple[tuple[str, str, str], ...]:
    """(colour, texture, shape) of each class, chosen greedily to spread attributes.

    Each pick is the unused combination whose shape, then colour, then texture (then
    the pairs of them) have been used least so far; ties are broken by a fixed hash.
    The choice is prefix-stable: the first k classes of n are the k classes of k.
    """
    max_classes = len(SHAPES) * len(TEXTURES) * len(COLOURS)
    if not 1 <= n_classes <= max_classes:
        raise ValueError(f"n_classes must be in [1, {max_classes}], got {n_classes}")
    colours = list(COLOURS)
    combos = [(c, t, s) for s in SHAPES for t in TEXTURES for c in colours]
    n_s: dict[str, int] = dict.fromkeys(SHAPES, 0)
    n_t: dict[str, int] = dict.fromkeys(TEXTURES, 0)
    n_c: dict[str, int] = dict.fromkeys(colours, 0)
    pairs: dict[tuple[str, str], int] = {}
    chosen: list[tuple[str, str, str]] = []
    unused = set(combos)
    for _ in range(n_classes):

        def key(combo: tuple[str, str, str]) -> tuple:
            c, t, s = combo
            return (
                n_s[s],
                n_c[c],
                n_t[t],
                pairs.get((s, c), 0) + pairs.get((s, t), 0) + pairs.get((c, t), 0),
                zlib.crc32("-".join(combo).encode()),
            )

        best = min(unused, key=key)
        unused.remove(best)
        chosen.append(best)
        c, t, s = best
        n_s[s] += 1
        n_t[t] += 1
        n_c[c] += 1
        for p in ((s, c), (s, t), (c, t)):
            pairs[p] = pairs.get(p, 0) + 1
    return tuple(chosen)


def class_names(n_classes: int) -> list[str]:
    """Deterministic class names like 'red-striped-star', n_classes distinct ones."""
    return ["-".join(attrs) for attrs in _class_table(n_classes)]


# --------------------------------------------------------------------------- shapes


def _circle(n: int = 48, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    a = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _heart(n: int = 60) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.abs(pts).max()


_W = 0.34  # half-width of the cross arms
_SHAPE_OPS: dict[str, list[tuple[np.ndarray, int]]] = {
    # each shape: polygons in a unit frame, painted in order with value 255 (add) or 0 (cut)
    "circle": [(_circle(), 255)],
    "square": [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)],
    "triangle": [(_regular(3) + [0.0, 0.25], 255)],
    "star": [(_star(), 255)],
    "cross": [
        (
            np.array(
                [
                    [-_W, -1],
                    [_W, -1],
                    [_W, -_W],
                    [1, -_W],
                    [1, _W],
                    [_W, _W],
                    [_W, 1],
                    [-_W, 1],
                    [-_W, _W],
                    [-1, _W],
                    [-1, -_W],
                    [-_W, -_W],
                ],
                float,
            ),
            255,
        )
    ],
    "hexagon": [(_regular(6, 0.0), 255)],
    "ring": [(_circle(), 255), (_circle(r=0.55), 0)],
    "crescent": [(_circle(), 255), (_circle(r=0.88, cx=0.48, cy=-0.1), 0)],
    "heart": [(_heart(), 255)],
    "arrow": [
        (
            np.array(
                [[-1, -0.22], [0.15, -0.22], [0.15, -0.62], [1, 0], [0.15, 0.62], [0.15, 0.22], [-1, 0.22]],
                float,
            ),
            255,
        )
    ],
}


# --------------------------------------------------------------------------- backgrounds

_BACKGROUNDS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "stereo_motorcycle",
    "clock",
    "cell",
)


@lru_cache(maxsize=1)
def _background_photos() -> tuple[np.ndarray, ...]:
    """The skimage sample photos available offline, as RGB uint8 (loaded once)."""
    from skimage import data as skdata

    photos = []
    for name in _BACKGROUNDS:
        try:
            img = getattr(skdata, name)()
        except Exception:  # missing optional data file (needs pooch / network)
            continue
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
            img = img[0]
        img = np.asarray(img)
        if img.dtype != np.uint8:
            continue
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        photos.append(np.ascontiguousarray(img[:, :, :3]))
    return tuple(photos)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A toned-down random crop of a real photo, float32 RGB (size, size, 3)."""
    photos = _background_photos()
    if not photos:  # no photo available: smooth random colour noise
        low = rng.uniform(40, 215, size=(8, 8, 3)).astype(np.float32)
        return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(round(min(h, w) * rng.uniform(0.35, 1.0)))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    bg = cv2.resize(crop, (size, size), interpolation=interp).astype(np.float32)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.9, 1.1, size=3)  # brightness + colour cast
    bg = bg * gain.astype(np.float32)
    sigma = rng.uniform(0.6, 1.4) * size / 256
    bg = cv2.GaussianBlur(bg, (0, 0), sigmaX=max(sigma, 0.3))
    tone = rng.uniform(0.25, 0.45)  # pull towards a mid grey: lower contrast, still cluttered
    bg = (1 - tone) * bg + tone * rng.uniform(100, 150)
    return np.ascontiguousarray(np.clip(bg, 0, 255), dtype=np.float32)


# --------------------------------------------------------------------------- painting


def _sample_sizes(rng: np.random.Generator, n: int, lo: float, hi: float, alpha: float) -> np.ndarray:
    """n sizes from p(s) ~ s^-alpha truncated to [lo, hi] (inverse-CDF sampling)."""
    u = rng.random(n)
    if hi <= lo:
        return np.full(n, float(lo))
    if abs(alpha - 1.0) < 1e-9:
        return lo * (hi / lo) ** u
    e = 1.0 - alpha
    return (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)


_Polys = list[tuple[np.ndarray, int]]  # polygons with the value they are painted with


def _place(ops: _Polys, size: float, aspect: float, angle: float) -> tuple[_Polys, np.ndarray]:
    """Stretch, rotate and scale unit-frame polygons so the full box's longest side is `size`.

    Returns the transformed polygons (centred on 0) and the 2x2 matrix used.
    """
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.diag([aspect, 1.0 / aspect])
    pts = np.concatenate([p for p, _ in ops]) @ m.T
    extent = float((pts.max(0) - pts.min(0)).max())
    m = m * (size / extent)
    return [(p @ m.T, v) for p, v in ops], m


def _raster(polys: _Polys, cx: float, cy: float, thickness: int = 0) -> tuple[int, int, np.ndarray]:
    """Anti-aliased uint8 coverage mask of polygons around (cx, cy): (x0, y0, mask)."""
    allp = np.concatenate([p for p, _ in polys])
    pad = 2 + thickness
    x0 = int(np.floor(cx + allp[:, 0].min())) - pad
    y0 = int(np.floor(cy + allp[:, 1].min())) - pad
    x1 = int(np.ceil(cx + allp[:, 0].max())) + pad + 1
    y1 = int(np.ceil(cy + allp[:, 1].max())) + pad + 1
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for p, value in polys:
        q = np.round((p + [cx - x0, cy - y0]) * _SCALE).astype(np.int32)[None]
        if thickness:
            cv2.polylines(mask, q, False, value, thickness, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillPoly(mask, q, value, cv2.LINE_AA, _SHIFT)
    return x0, y0, mask


def _texture(
    rng: np.random.Generator,
    texture: str,
    rgb: np.ndarray,
    shape_hw: tuple[int, int],
    x0: int,
    y0: int,
    cx: float,
    cy: float,
    m: np.ndarray,
    size: float,
) -> np.ndarray:
    """Texture of one instance in its own (rotated) frame, float32 (h, w, 3)."""
    h, w = shape_hw
    if texture == "solid":
        return np.broadcast_to(rgb.astype(np.float32), (h, w, 3))
    # pixel coordinates in the object frame, in pixels (inverse of the rotation part)
    ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    angle = np.arctan2(m[1, 0], m[0, 0])
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    dark = rgb * 0.3
    light = rgb * 0.25 + 255 * 0.75
    if texture == "gradient":
        half = max(size / 2, 1.0)
        t = np.clip((u / half + 1) / 2 + rng.uniform(-0.15, 0.15), 0, 1)
        t = (t * rng.uniform(0.75, 0.95))[..., None]
        return (1 - t) * rgb + t * dark
    period = max(3.0, size * rng.uniform(0.18, 0.28))
    pu = u + rng.uniform(0, period)
    pv = v + rng.uniform(0, period)
    if texture == "striped":
        t = np.clip(0.5 + 1.5 * np.sin(2 * np.pi * pu / period), 0, 1)
        other = dark
    elif texture == "checkered":
        cell = np.floor(pu / period) + np.floor(pv / period)
        t = (cell % 2).astype(np.float32)
        other = dark
    elif texture == "dotted":
        period = max(4.0, period * 1.2)
        fu = np.mod(pu, period) - period / 2
        fv = np.mod(pv, period) - period / 2
        r = 0.3 * period
        t = np.clip(r + 0.5 - np.sqrt(fu * fu + fv * fv), 0, 1)
        other = light
    else:
        raise ValueError(f"unknown texture {texture!r}")
    t = t[..., None]
    return (1 - t) * rgb + t * other


def _composite(
    img: np.ndarray, inst: np.ndarray, x0: int, y0: int, mask: np.ndarray, tex: np.ndarray, label: int
) -> None:
    """Alpha-blend `tex` into `img` through `mask`; pixels >= 50 % covered get `label`."""
    size = img.shape[0]
    h, w = mask.shape
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + w, size), min(y0 + h, size)
    if ix0 >= ix1 or iy0 >= iy1:
        return
    sub = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    dst = (slice(iy0, iy1), slice(ix0, ix1))
    m = mask[sub]
    a = (m.astype(np.float32) * np.float32(1 / 255))[..., None]
    img[dst] += a * (tex[sub] - img[dst])
    inst[dst][m >= 128] = label


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random RGB colour, float32 (3,)."""
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _distractor(
    rng: np.random.Generator, size: int, lo: float, alpha: float
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """One unlabelled clutter item: irregular blob, polyline scribble or noise patch."""
    kind = int(rng.integers(3))
    cx, cy = rng.uniform(0, size, 2)
    # clutter as long-tailed as the objects (a little flatter), capped at 40 % of the scene
    extent = float(_sample_sizes(rng, 1, lo, max(lo, 0.4 * size), max(alpha - 0.3, 0.5))[0])
    if kind == 0:  # irregular blob: radius modulated by random harmonics, noisy fill
        a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        r = np.ones_like(a)
        for k in (2, 3, 5):
            r += rng.uniform(0.1, 0.3) * np.sin(k * a + rng.uniform(0, 2 * np.pi))
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1) * (extent / 2 / r.max())
        x0, y0, mask = _raster([(pts, 255)], cx, cy)
        tex = _random_colour(rng) + rng.normal(0, 18, size=(*mask.shape, 3)).astype(np.float32)
    elif kind == 1:  # polyline scribble
        pts = rng.uniform(-extent / 2, extent / 2, size=(int(rng.integers(3, 8)), 2))
        thick = int(rng.integers(1, 4))
        x0, y0, mask = _raster([(pts, 255)], cx, cy, thickness=thick)
        tex = np.broadcast_to(_random_colour(rng), (*mask.shape, 3))
    else:  # rotated rectangle of smoothed colour noise
        half = np.array([extent / 2, extent / 2 * rng.uniform(0.3, 1.0)])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        ang = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        x0, y0, mask = _raster([(corners @ rot.T, 255)], cx, cy)
        noise = rng.uniform(0, 255, size=(*mask.shape, 3)).astype(np.float32)
        tex = cv2.GaussianBlur(noise, (0, 0), sigmaX=float(rng.uniform(0.5, 2.0)))
        tex = np.clip((tex - 128) * 2.5 + 128, 0, 255)
    if rng.random() < 0.5:
        mask = (mask.astype(np.float32) * rng.uniform(0.6, 1.0)).astype(np.uint8)  # translucent
    return x0, y0, mask, tex


_Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _box_overlap(box: _Box, others: list[_Box]) -> float:
    """Largest fraction of an earlier box covered by `box`, and vice versa."""
    worst = 0.0
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    for a0, b0, a1, b1 in others:
        iw = min(x1, a1) - max(x0, a0)
        ih = min(y1, b1) - max(y0, b0)
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        worst = max(worst, inter / max((a1 - a0) * (b1 - b0), 1e-6), inter / area)
    return worst


@dataclass(frozen=True)
class _Plan:
    """What a scene paints: the objects' sizes and classes, and the painting sequence."""

    sizes: np.ndarray  # longest side of each object's full box, pixels
    cats: np.ndarray  # class index (0-based) of each object
    seq: list[tuple[str, int]]  # ("obj", object index) or ("dis", clutter index), in painting order
    lo: float  # smallest object size (also that of the clutter)


@dataclass
class _Canvas:
    """A scene being painted: image, instance ids, and the objects and boxes painted so far."""

    img: np.ndarray  # float32 RGB (size, size, 3)
    inst: np.ndarray  # int32 (size, size), 0: background or clutter, k: the k-th object
    objs: list[dict] = field(default_factory=list)  # {"instance", "category_id", "drawn_area"}
    boxes: list[_Box] = field(default_factory=list)  # full (unoccluded) box of each object

    @property
    def size(self) -> int:
        """Side of the square scene in pixels."""
        return self.img.shape[0]


def _paint_order(rng: np.random.Generator, sizes: np.ndarray, n_dis: int) -> list[tuple[str, int]]:
    """Objects mostly large before small (noisy), with the clutter inserted at random positions."""
    # mostly large objects behind small ones (painter's order with noise) -> partial occlusion
    order = np.argsort(-(np.log(sizes) + rng.normal(0, 0.35, sizes.size)), kind="stable")
    # interleave the clutter at random positions of the painting sequence
    seq = [("obj", int(i)) for i in order]
    for j in range(n_dis):
        seq.insert(int(rng.integers(len(seq) + 1)), ("dis", j))
    return seq


def _plan_scene(cfg: SyntheticParams, rng: np.random.Generator) -> _Plan:
    """Sample the number, sizes and classes of the objects, the clutter count and the painting order."""
    n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    n_dis = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    hi = float(min(cfg.max_object, cfg.image_size))
    lo = float(min(cfg.min_object, hi))
    sizes = _sample_sizes(rng, n_obj, lo, hi, cfg.scale_alpha)
    cats = rng.integers(cfg.classes, size=n_obj)
    return _Plan(sizes=sizes, cats=cats, seq=_paint_order(rng, sizes, n_dis), lo=lo)


def _paint_distractor(canvas: _Canvas, rng: np.random.Generator, lo: float, alpha: float) -> None:
    """Paint one unlabelled clutter item (instance id 0)."""
    x0, y0, mask, tex = _distractor(rng, canvas.size, lo, alpha)
    _composite(canvas.img, canvas.inst, x0, y0, mask, tex, 0)


def _pose(rng: np.random.Generator, shape: str, size: float) -> tuple[_Polys, np.ndarray]:
    """A shape's polygons with a random aspect ratio and rotation, scaled to `size` (and the matrix)."""
    aspect = float(np.sqrt(rng.uniform(0.8, 1.2)))  # width/height ratio in [0.8, 1.2]
    return _place(_SHAPE_OPS[shape], size, aspect, float(rng.uniform(0, 2 * np.pi)))


def _position(rng: np.random.Generator, polys: _Polys, canvas: _Canvas) -> tuple[float, float, _Box]:
    """A centre for the polygons whose box hides little of the earlier objects' boxes (and that box)."""
    allp = np.concatenate([p for p, _ in polys])
    pmin, pmax = allp.min(0), allp.max(0)
    best = None
    for _ in range(8):  # a few tries to avoid hiding earlier objects completely
        c = rng.uniform(0, canvas.size, 2)
        box = (c[0] + pmin[0], c[1] + pmin[1], c[0] + pmax[0], c[1] + pmax[1])
        ov = _box_overlap(box, canvas.boxes)
        if best is None or ov < best[0]:
            best = (ov, c, box)
        if ov < 0.3:
            break
    _, (cx, cy), box = best
    return cx, cy, box


def _instance_colour(rng: np.random.Generator, colour: str) -> np.ndarray:
    """The class colour with a small random gain and offset, float32 RGB (3,)."""
    base = np.asarray(COLOURS[colour], np.float32)
    return np.clip(base * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10, 3), 0, 255).astype(np.float32)


def _paint_object(
    canvas: _Canvas, rng: np.random.Generator, cls: tuple[str, str, str], category: int, size: float
) -> None:
    """Paint one labelled object of class `cls` = (colour, texture, shape) and record it."""
    colour, texture, shape = cls
    polys, m = _pose(rng, shape, size)
    cx, cy, box = _position(rng, polys, canvas)
    canvas.boxes.append(box)
    x0, y0, mask = _raster(polys, cx, cy)
    rgb = _instance_colour(rng, colour)
    tex = _texture(rng, texture, rgb, mask.shape, x0=x0, y0=y0, cx=cx, cy=cy, m=m, size=size)
    label = len(canvas.objs) + 1
    _composite(canvas.img, canvas.inst, x0, y0, mask, tex, label)
    drawn = int((mask >= 128).sum())
    canvas.objs.append({"instance": label, "category_id": category + 1, "drawn_area": drawn})


def _quantise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add mild sensor noise to the float image (in place) and round it to uint8."""
    img += rng.normal(0, 2.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _visible_annotations(inst: np.ndarray, objs: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Drop mostly hidden objects; renumber the rest 1..k and give them visible box and area."""
    visible = np.bincount(inst.ravel(), minlength=len(objs) + 1)
    slices = ndimage.find_objects(inst, max_label=len(objs))
    kept = []
    relabel = np.zeros(len(objs) + 1, np.int32)
    for o in objs:
        k = o["instance"]
        area = int(visible[k])
        too_small = area < MIN_VISIBLE_PIXELS or area < MIN_VISIBLE_FRACTION * o["drawn_area"]
        if too_small or slices[k - 1] is None:
            continue
        sy, sx = slices[k - 1]
        o = dict(o, instance=len(kept) + 1, area=area)
        o["bbox"] = [float(sx.start), float(sy.start), float(sx.stop - sx.start), float(sy.stop - sy.start)]
        relabel[k] = o["instance"]
        kept.append(o)
    return relabel[inst], kept


def _render_scene(cfg: SyntheticParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paint one scene.

    Returns the RGB uint8 image, the int32 instance-id mask (0: background or clutter,
    k: the k-th labelled object, visible pixels only) and one dict per *kept* object:
    ``{"instance", "category_id", "bbox" [x, y, w, h], "area", "drawn_area"}``.
    """
    size = cfg.image_size
    table = _class_table(cfg.classes)
    canvas = _Canvas(img=_background(rng, size), inst=np.zeros((size, size), np.int32))
    plan = _plan_scene(cfg, rng)
    for kind, i in plan.seq:
        if kind == "dis":
            _paint_distractor(canvas, rng, plan.lo, cfg.scale_alpha)
        else:
            cat = int(plan.cats[i])
            _paint_object(canvas, rng, cls=table[cat], category=cat, size=float(plan.sizes[i]))
    out = _quantise(rng, canvas.img)
    inst, kept = _visible_annotations(canvas.inst, canvas.objs)
    return out, inst, kept


# --------------------------------------------------------------------------- split


def _split_rng(seed: int, split: str, image_id: int) -> np.random.Generator:
    return np.random.default_rng([seed % (1 << 64), zlib.crc32(split.encode()), image_id])


def generate_split(
    cfg: SyntheticParams, split: str, n_images: int, seed: int, out_dir: Path, progress: bool = True
) -> dict:
    """Render n_images scenes into out_dir/'images'/split/<image_id:06d>.png and return a COCO dict.

    ``{"images": [{"id", "file_name", "width", "height"}], "annotations": [{"id",
    "image_id", "category_id", "bbox" [x, y, w, h], "area", "iscrowd"}], "categories":
    [{"id", "name"}]}``; ``file_name`` is relative to ``out_dir``, image ids start at 1,
    bbox/area describe the visible part of each object.  Deterministic in
    ``(cfg, split, seed)``; train and test draw from different random streams.
    """
    out_dir = Path(out_dir)
    img_dir = out_dir / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    ids = range(1, n_images + 1)
    for image_id in tqdm(ids, desc=f"synthetic {split}", unit="img", disable=not progress):
        rgb, _, objs = _render_scene(cfg, _split_rng(seed, split, image_id))
        rel = f"images/{split}/{image_id:06d}.png"
        if not cv2.imwrite(str(out_dir / rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {out_dir / rel}")
        size = cfg.image_size
        images.append({"id": image_id, "file_name": rel, "width": size, "height": size})
        for o in objs:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": o["category_id"],
                    "bbox": o["bbox"],
                    "area": float(o["area"]),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names(cfg.classes))]
    return {"images": images, "annotations": annotations, "categories": categories}
