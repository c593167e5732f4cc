"""Image reading, rectangular crops and their byte encoding (the extract stage stores crops this way).

All images in and out are RGB ``uint8`` arrays of shape ``H x W x 3``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from stages.errors import InputError

__all__ = ["crop_boxes", "encode_crop", "decode_crop", "image_reader", "read_image", "read_photo", "to_rgb_uint8"]

_JPEG_QUALITY = 95


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a grayscale ``HxW``/``HxWx1``, RGB or RGBA array to RGB ``uint8``.

    Integer inputs wider than 8 bits are rescaled from their dtype's range, float
    inputs are taken as ``[0, 1]`` and bool as ``{0, 1}``; the alpha channel is dropped.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == np.bool_:
        return np.ascontiguousarray(img.astype(np.uint8) * 255)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        if info.min < 0:
            img = np.clip(img, 0, None)
        scaled = img.astype(np.float64) * (255.0 / info.max)
        return np.ascontiguousarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    if np.issubdtype(img.dtype, np.floating):
        scaled = np.nan_to_num(img.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return np.ascontiguousarray(np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8))
    raise ValueError(f"unsupported image dtype {img.dtype}")


def _crop_bounds(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Integer ``[N, 4]`` crop bounds: floor x1/y1, ceil x2/y2, clipped, >= 1 px."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.nan_to_num(b, nan=0.0, posinf=float(max(width, height)), neginf=0.0)
    x1 = np.clip(np.floor(b[:, 0]), 0, width - 1).astype(np.int64)
    y1 = np.clip(np.floor(b[:, 1]), 0, height - 1).astype(np.int64)
    x2 = np.clip(np.ceil(b[:, 2]), 0, width).astype(np.int64)
    y2 = np.clip(np.ceil(b[:, 3]), 0, height).astype(np.int64)
    x2 = np.maximum(x2, x1 + 1)
    y2 = np.maximum(y2, y1 + 1)
    return np.stack([x1, y1, x2, y2], axis=1)


def _resize_longest(crop: np.ndarray, longest_side: int) -> np.ndarray:
    h, w = crop.shape[:2]
    s = longest_side / max(h, w)
    if h >= w:
        new_h, new_w = longest_side, max(1, int(round(w * s)))
    else:
        new_h, new_w = max(1, int(round(h * s))), longest_side
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
    out = cv2.resize(crop, (new_w, new_h), interpolation=interp)
    if out.ndim == 2 and crop.ndim == 3:  # cv2 drops a singleton channel axis
        out = out[:, :, None]
    return out


def crop_boxes(image: np.ndarray, boxes: np.ndarray, longest_side: int) -> list[np.ndarray]:
    """Cut one rectangular crop per box and resize it so its longest side is ``longest_side``.

    Crop bounds are integers (floor of ``x1, y1``, ceil of ``x2, y2``), clipped to the
    image and at least one pixel wide and high.  The aspect ratio is kept (the short
    side is rounded, at least 1 px); downscaling uses ``INTER_AREA``, upscaling
    ``INTER_LINEAR``.
    """
    if longest_side < 1:
        raise ValueError(f"longest_side must be >= 1, got {longest_side}")
    image = np.asarray(image)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    bounds = _crop_bounds(boxes, width, height)
    return [_resize_longest(image[y1:y2, x1:x2], int(longest_side)) for x1, y1, x2, y2 in bounds.tolist()]


def encode_crop(crop: np.ndarray, fmt: str = "png") -> bytes:
    """Encode an RGB ``uint8`` crop as PNG (lossless) or JPEG (quality 95) bytes."""
    fmt = fmt.lower()
    if fmt in ("jpeg", "jpg"):
        ext, flags = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    elif fmt == "png":
        ext, flags = ".png", []
    else:
        raise ValueError(f"unknown crop format {fmt!r} (expected 'png' or 'jpeg')")
    rgb = to_rgb_uint8(crop)
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    if not ok:
        raise ValueError(f"cv2 could not encode a crop of shape {rgb.shape} as {fmt}")
    return buf.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to an RGB ``uint8`` ``HxWx3`` array (ValueError if invalid)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
    if bgr is None:
        raise InputError("cannot decode crop bytes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """Read an image file as RGB ``uint8`` ``HxWx3``; None if missing, corrupt or unreadable.

    Grayscale is replicated to three channels, alpha is dropped, 16-bit images are
    rescaled to 8 bits.  EXIF orientation is ignored (pixels as stored, like PIL's
    default), so boxes annotated on the raw pixel grid stay valid.
    """
    try:
        raw = np.fromfile(Path(path), dtype=np.uint8)
        if raw.size == 0:
            return None
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0 or img.ndim not in (2, 3):
            return None
        if img.ndim == 3:
            channels = img.shape[2]
            if channels == 1:
                img = img[:, :, 0]
            elif channels == 3:
                img = img[:, :, ::-1]  # BGR -> RGB
            elif channels == 4:
                img = img[:, :, [2, 1, 0]]  # BGRA -> RGB, alpha dropped
            else:
                return None
        return to_rgb_uint8(img)
    except Exception:  # never raise for a bad image
        return None


def read_photo(path: str | os.PathLike) -> np.ndarray | None:
    """A photo as RGB ``uint8`` ``HxWx3`` with its EXIF orientation applied; None when Pillow cannot
    decode it completely (missing, not an image, truncated, corrupt)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()  # a truncated or corrupt file raises here (ImageFile.LOAD_TRUNCATED_IMAGES is off)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return to_rgb_uint8(np.clip(np.asarray(im), 0, 65535).astype(np.uint16))
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except Exception:  # never raise for a bad photo
        return None


def image_reader(dataset: str) -> Callable[[str | os.PathLike], np.ndarray | None]:
    """How a dataset's image files are read: photo folders (``images``) through Pillow with their EXIF
    orientation applied (:func:`read_photo`), every other source as stored (:func:`read_image`), the
    pixel grid its annotations were drawn on."""
    from stages.config import SOURCES

    return read_photo if SOURCES[dataset].photos else read_image
