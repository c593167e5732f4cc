import cv2
import numpy as np
import pytest

from stages.crops import crop_boxes, decode_crop, encode_crop, read_image


def _image(h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h=48, w=64):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], axis=2).astype(np.uint8)


def test_crop_without_resize_is_a_plain_slice():
    img = _image()
    (crop,) = crop_boxes(img, np.array([[10, 5, 30, 15]], float), longest_side=20)
    np.testing.assert_array_equal(crop, img[5:15, 10:30])


def test_crop_bounds_floor_ceil_and_clip():
    img = _image()
    boxes = np.array([[10.7, 5.2, 29.1, 14.01], [-5, -5, 10, 200], [3.2, 3.2, 3.3, 3.3], [79.5, 59.5, 90, 90]], float)
    crops = crop_boxes(img, boxes, longest_side=64)
    # [10, 5, 30, 15] -> 20 x 10 pixels, upscaled to 64 x 32
    assert crops[0].shape == (32, 64, 3)
    # clipped to [0, 0, 10, 60]: 10 wide, 60 high
    assert crops[1].shape == (64, 11, 3)
    # sub-pixel box: still one pixel, here img[3, 3]
    assert crops[2].shape == (64, 64, 3)
    np.testing.assert_array_equal(crops[2], np.broadcast_to(img[3, 3], (64, 64, 3)))
    # box starting on the last pixel, beyond the image: the corner pixel
    np.testing.assert_array_equal(crops[3][0, 0], img[59, 79])


@pytest.mark.parametrize("side", [8, 32, 64, 200])
def test_longest_side_exact_and_aspect_kept(side):
    img = _image(200, 300)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 150, (30, 2))
    wh = rng.uniform(2, 140, (30, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    for box, crop in zip(boxes, crop_boxes(img, boxes, side)):
        x1, y1 = np.floor(box[:2])
        x2, y2 = np.minimum(np.ceil(box[2:]), [300, 200])
        w, h = int(x2 - x1), int(y2 - y1)
        short = max(1, int(round(min(w, h) * side / max(w, h))))
        expected = (side, short) if h >= w else (short, side)
        assert crop.shape == (*expected, 3)
        assert crop.dtype == np.uint8
        # the aspect ratio is kept up to the rounding of the short side
        if short > 1:
            assert abs(short / side - min(w, h) / max(w, h)) <= 0.5 / side + 1e-9


def test_crop_resize_content_and_empty_input():
    img = _smooth(100, 100)
    (down,) = crop_boxes(img, np.array([[0, 0, 100, 100]]), 50)
    np.testing.assert_allclose(down.astype(float), cv2.resize(img, (50, 50), interpolation=cv2.INTER_AREA), atol=0)
    assert crop_boxes(img, np.zeros((0, 4)), 32) == []


def test_png_roundtrip_is_lossless():
    crop = _image(33, 47)
    data = encode_crop(crop, "png")
    assert isinstance(data, bytes) and data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode_crop(data), crop)


def test_jpeg_roundtrip_is_close():
    crop = _smooth()
    data = encode_crop(crop, "jpeg")
    assert data[:2] == b"\xff\xd8"
    out = decode_crop(data)
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - crop.astype(int)).mean() < 2.0
    # channel order survives (no RGB/BGR swap)
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    assert decode_crop(encode_crop(red, "jpeg"))[..., 0].min() > 240


def test_encode_errors():
    with pytest.raises(ValueError):
        encode_crop(_image(4, 4), "gif")
    with pytest.raises(ValueError):
        decode_crop(b"not an image")


def test_read_image_rgb_gray_alpha_16bit(tmp_path):
    rgb = _image(20, 30)
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)

    gray = rgb[..., 0]
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = read_image(str(tmp_path / "gray.png"))
    assert out.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)

    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)

    deep = rgb.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)

    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(_smooth(), cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "photo.jpg")
    assert out.shape == (48, 64, 3) and np.abs(out.astype(int) - _smooth()).mean() < 3


def test_read_image_bad_files_return_none(tmp_path):
    assert read_image(tmp_path / "missing.png") is None
    assert read_image(tmp_path) is None  # a directory
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_image(tmp_path / "empty.png") is None
    (tmp_path / "junk.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    assert read_image(tmp_path / "junk.jpg") is None
    ok, buf = cv2.imencode(".png", _image(40, 40))
    (tmp_path / "truncated.png").write_bytes(buf.tobytes()[:60])
    assert read_image(tmp_path / "truncated.png") is None
