"""Pure helpers of the server: uploads (EXIF, formats, bombs), JPEG pictures, boxes, pages."""

import io

import numpy as np
import pytest
from PIL import Image

from stages.errors import UserError
from stages.serve.images import BadUpload, decode_upload, encode_jpeg, fit_size, page_bounds, parse_box


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_upload_applies_exif_orientation_like_a_browser():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # red strip on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encoded(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    shown = decode_upload(data)
    assert shown.shape == (40, 20, 3) and shown.dtype == np.uint8
    assert shown[:10, :, 0].mean() > 200 and shown[-10:, :, 0].mean() < 50  # the strip is now on top


def test_upload_formats_modes_and_refusals():
    gray = Image.fromarray(np.full((8, 9), 128, np.uint8))
    for fmt in ("PNG", "WEBP", "BMP", "TIFF", "GIF"):
        assert decode_upload(_encoded(gray, fmt)).shape == (8, 9, 3)
    rgba = Image.fromarray(np.zeros((5, 6, 4), np.uint8))
    assert decode_upload(_encoded(rgba, "PNG")).shape == (5, 6, 3)
    png = _encoded(gray, "PNG")
    with pytest.raises(BadUpload, match="not a readable image"):
        decode_upload(png[: len(png) // 2])
    with pytest.raises(BadUpload, match="not a readable image"):
        decode_upload(_encoded(gray, "PPM"))  # a format outside the accepted list
    with pytest.raises(BadUpload, match="empty"):
        decode_upload(b"")
    with pytest.raises(BadUpload, match="at most 50 pixels"):
        decode_upload(png, max_pixels=50)
    assert issubclass(BadUpload, UserError)


def test_encode_jpeg_downscales_only():
    image = np.zeros((100, 50, 3), np.uint8)
    assert Image.open(io.BytesIO(encode_jpeg(image, 40))).size == (20, 40)
    assert Image.open(io.BytesIO(encode_jpeg(image, 400))).size == (50, 100)
    assert fit_size(1000, 10, 100) == (100, 1) and fit_size(30, 20, 100) == (30, 20)


def test_parse_box_and_pages():
    assert parse_box("1,2.5,3,4") == (1.0, 2.5, 3.0, 4.0) and parse_box([1, 2, 3, 4]) == (1, 2, 3, 4)
    assert parse_box(None) is None and parse_box(" ") is None
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,inf", [1, 2, 3, 4, 5]):
        with pytest.raises(UserError, match="box must be"):
            parse_box(bad)
    assert page_bounds(50, 0, 24) == (0, 24, 3) and page_bounds(50, 2, 24) == (48, 50, 3)
    assert page_bounds(50, 9, 24) == (50, 50, 3) and page_bounds(0, 0, 24) == (0, 0, 1)
