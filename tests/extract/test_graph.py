import numpy as np
import pytest

from stages.boxes import box_iou
from stages.config import GraphExtractorParams
from stages.extract.graph import GraphExtractor


def _scene(size=(256, 256), seed=0):
    """Noisy gradient background with three objects of known boxes (10 to 100 px)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([90 + 40 * xx / w, 110 + 0 * xx, 120 - 30 * yy / h], axis=2)
    img = img + rng.normal(0, 10, img.shape)
    boxes = []
    # a red rectangle 100 x 60
    img[30:90, 20:120] = (200, 40, 40) + rng.normal(0, 10, (60, 100, 3))
    boxes.append([20, 30, 120, 90])
    # a yellow disc, diameter 40
    disc = (xx - 180.0) ** 2 + (yy - 170.0) ** 2 <= 20.0**2
    img[disc] = (230, 210, 40) + rng.normal(0, 10, (disc.sum(), 3))
    ys, xs = np.nonzero(disc)
    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    # a small dark blue square, 10 x 10
    img[200:210, 50:60] = (20, 30, 160) + rng.normal(0, 10, (10, 10, 3))
    boxes.append([50, 200, 60, 210])
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, float)


@pytest.fixture(scope="module")
def scene_result():
    img, gt = _scene()
    boxes, scores = GraphExtractor(GraphExtractorParams()).propose(img)
    return img, gt, boxes, scores


def test_finds_every_object(scene_result):
    _, gt, boxes, _ = scene_result
    best = box_iou(gt, boxes).max(axis=1)
    assert (best >= 0.7).all(), best


def test_output_contract(scene_result):
    img, _, boxes, scores = scene_result
    h, w = img.shape[:2]
    cfg = GraphExtractorParams()
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (boxes.shape[0],)
    assert 0 < boxes.shape[0] <= cfg.max_objects
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (bw >= cfg.min_box).all() and (bh >= cfg.min_box).all()
    assert (bw * bh <= cfg.max_area_frac * w * h).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (np.diff(scores) <= 0).all()
    # NMS: no two kept boxes overlap more than nms_iou
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= cfg.nms_iou + 1e-6


def test_objects_rank_high(scene_result):
    _, gt, boxes, _ = scene_result
    best_rank = np.argmax(box_iou(gt, boxes) >= 0.7, axis=1)
    assert (best_rank < 20).all(), best_rank


def test_max_objects_and_determinism():
    img, _ = _scene(seed=1)
    ex = GraphExtractor(GraphExtractorParams(max_objects=5))
    b1, s1 = ex.propose(img)
    b2, s2 = ex.propose(img.copy())
    assert b1.shape == (5, 4)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(s1, s2)
    full, _ = GraphExtractor(GraphExtractorParams()).propose(img)
    np.testing.assert_array_equal(full[:5], b1)


def test_constant_image_gives_no_boxes():
    boxes, scores = GraphExtractor(GraphExtractorParams()).propose(np.full((64, 80, 3), 77, np.uint8))
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_grayscale_and_rgba_inputs():
    img, gt = _scene(seed=2)
    ex = GraphExtractor(GraphExtractorParams())
    gray = (img.astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    boxes, scores = ex.propose(gray)
    assert boxes.shape[0] > 0 and boxes.dtype == np.float32
    assert (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 256).all()
    # the objects differ in luminance from the background too
    assert (box_iou(gt, boxes).max(axis=1) >= 0.5).all()
    rgba = np.concatenate([img, np.full((256, 256, 1), 255, np.uint8)], axis=2)
    b_rgba, s_rgba = ex.propose(rgba)
    b_rgb, s_rgb = ex.propose(img)
    np.testing.assert_array_equal(b_rgba, b_rgb)
    np.testing.assert_array_equal(s_rgba, s_rgb)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2, 3), (1, 50, 3), (5, 7, 3), (9, 9)])
def test_tiny_images(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    boxes, scores = GraphExtractor(GraphExtractorParams()).propose(img)
    assert boxes.shape == (scores.shape[0], 4)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32


def test_large_image_boxes_in_original_coordinates():
    # The scene upsampled 2x is downscaled back to 256 px (max_side): the work image is
    # the scene itself, so the boxes must be the scene's boxes scaled by 2.
    img, gt = _scene(seed=3)
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)
    cfg = GraphExtractorParams(max_side=256, min_box=1)  # min_box is in original pixels
    boxes, scores = GraphExtractor(cfg).propose(big)
    assert (boxes[:, 2] <= 512).all() and (boxes[:, 3] <= 512).all()
    small, small_scores = GraphExtractor(cfg).propose(img)
    np.testing.assert_allclose(boxes, small * 2, atol=1e-4)
    np.testing.assert_allclose(scores, small_scores, atol=1e-6)
    assert (box_iou(gt * 2, boxes).max(axis=1) >= 0.7).all()
