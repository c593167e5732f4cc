"""Pure helpers of the server: decoding uploads, encoding pictures, parsing boxes, paging."""

from __future__ import annotations

import io
import math
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.crops import to_rgb_uint8
from stages.errors import InputError

UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # what Pillow may decode from an upload
MAX_UPLOAD_PIXELS = 64_000_000  # larger images are refused before decoding (decompression bombs)


class BadUpload(InputError):
    """An upload that is not a readable image (HTTP 400)."""


def decode_upload(data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> np.ndarray:
    """An uploaded photo as RGB uint8, EXIF orientation applied (as the browser shows it).

    Only the formats of :data:`UPLOAD_FORMATS` are read; anything else, a truncated file or an
    image of more than ``max_pixels`` pixels raises :class:`BadUpload` with a message.
    """
    if not data:
        raise BadUpload("the upload is empty: send the bytes of a JPEG, PNG, WebP, BMP, TIFF or GIF photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadUpload(f"the image is {w}x{h} pixels; at most {max_pixels:,} pixels are accepted")
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = np.asarray(im.convert("RGB"))
    except BadUpload:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning) as exc:
        raise BadUpload(
            f"the upload is not a readable image ({type(exc).__name__}); send a JPEG, PNG, WebP, BMP, TIFF or GIF photo"
        ) from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise BadUpload("the upload decoded to an empty image")
    return to_rgb_uint8(rgb)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled down so the longest side is at most ``max_side`` (never enlarged)."""
    s = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * s)), max(1, round(height * s))


def encode_jpeg(image: np.ndarray, max_side: int | None = None, quality: int = 88) -> bytes:
    """An RGB uint8 image as JPEG bytes, downscaled (area) to ``max_side`` when larger."""
    h, w = image.shape[:2]
    if max_side is not None and max(h, w) > max_side:
        image = cv2.resize(image, fit_size(w, h, max_side), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as JPEG")
    return buf.tobytes()


def parse_box(values) -> tuple[float, float, float, float] | None:
    """A box ``x1, y1, x2, y2`` (pixels) from a list or a comma-separated string; None for none/empty."""
    if values is None or (isinstance(values, str) and not values.strip()):
        return None
    parts = values.split(",") if isinstance(values, str) else list(values)
    try:
        box = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise InputError(f"box must be four numbers x1,y1,x2,y2 in pixels, got {values!r}") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise InputError(f"box must be four finite numbers x1,y1,x2,y2 in pixels, got {values!r}")
    return box


def page_bounds(total: int, page: int, per_page: int) -> tuple[int, int, int]:
    """(start, stop, pages) of 0-based ``page`` of ``per_page`` items; a page past the end is empty."""
    pages = max(1, math.ceil(total / per_page)) if per_page > 0 else 1
    start = min(max(0, page) * per_page, total)
    return start, min(start + per_page, total), pages
