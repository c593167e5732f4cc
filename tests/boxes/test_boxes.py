import numpy as np
import pytest
from pycocotools import mask as mask_utils

from stages.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    nms,
    paired_iou,
    valid_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def _random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(0.5, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_area():
    b = np.array([[0, 0, 2, 2], [1, 1, 4, 3], [5, 5, 5, 9], [3, 3, 1, 1]], float)
    np.testing.assert_allclose(box_area(b), [4, 6, 0, 0])
    assert box_area(np.zeros((0, 4))).shape == (0,)


def test_iou_hand_checked():
    a = np.array([[0, 0, 2, 2]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 2, 4, 4], [0, 0, 1, 1], [0, 0, 4, 2], [10, 10, 11, 11]], float)
    # overlap 1 / union 7; identical; touching corner; contained 1/4; 4/8; disjoint
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0, 0.25, 0.5, 0.0]])
    np.testing.assert_allclose(box_iou(b, a), box_iou(a, b).T)


def test_iou_shapes_and_empty():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 5), _random_boxes(rng, 3)
    assert box_iou(a, b).shape == (5, 3)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou(a, np.zeros((0, 4))).shape == (5, 0)
    assert paired_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


def test_degenerate_union_zero():
    z = np.array([[1, 1, 1, 1], [2, 2, 2, 5]], float)
    np.testing.assert_array_equal(box_iou(z, z), np.zeros((2, 2)))
    np.testing.assert_array_equal(paired_iou(z, z), [0.0, 0.0])
    # a degenerate box against a real one is 0 too
    assert box_iou(z, [[0, 0, 3, 3]])[0, 0] == 0.0


def test_pairwise_matches_paired():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 50), _random_boxes(rng, 50)
    np.testing.assert_allclose(np.diag(box_iou(a, b)), paired_iou(a, b))
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0)
    with pytest.raises(ValueError):
        paired_iou(a, b[:3])


def test_iou_matches_pycocotools():
    rng = np.random.default_rng(2)
    a, b = _random_boxes(rng, 200), _random_boxes(rng, 200)
    ref = mask_utils.iou(xyxy_to_xywh(a).tolist(), xyxy_to_xywh(b).tolist(), [0] * 200)
    np.testing.assert_allclose(box_iou(a, b), ref, atol=1e-9)
    np.testing.assert_allclose(paired_iou(a, b), np.diag(ref), atol=1e-9)


def test_xywh_roundtrip():
    rng = np.random.default_rng(3)
    a = _random_boxes(rng, 20)
    np.testing.assert_allclose(xywh_to_xyxy(xyxy_to_xywh(a)), a)
    np.testing.assert_allclose(xyxy_to_xywh([[1, 2, 4, 8]]), [[1, 2, 3, 6]])
    np.testing.assert_allclose(xywh_to_xyxy([[1, 2, 3, 6]]), [[1, 2, 4, 8]])


def test_clip():
    b = np.array([[-5, -5, 10, 10], [5, 5, 200, 80], [150, 150, 160, 170]], float)
    out = clip_boxes(b, 100, 50)
    np.testing.assert_allclose(out, [[0, 0, 10, 10], [5, 5, 100, 50], [100, 50, 100, 50]])
    assert not np.shares_memory(out, b)
    np.testing.assert_array_equal(valid_boxes(out), [True, True, False])


def test_valid_boxes():
    b = np.array(
        [
            [0, 0, 1, 1],
            [0, 0, 0.5, 3],
            [0, 0, 3, 0.5],
            [np.nan, 0, 3, 3],
            [0, 0, np.inf, 3],
            [3, 3, 1, 1],
            [0, 0, 4, 4],
        ],
        float,
    )
    np.testing.assert_array_equal(valid_boxes(b), [True, False, False, False, False, False, True])
    np.testing.assert_array_equal(valid_boxes(b, min_side=2.0), [False] * 6 + [True])


def test_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9], [21, 21, 30, 30]], float)
    scores = np.array([0.5, 0.9, 0.3, 0.8, 0.1])
    keep = nms(boxes, scores, 0.5)
    # 1 suppresses 0 and 3; 2 suppresses 4
    np.testing.assert_array_equal(keep, [1, 2])
    assert keep.dtype == np.int64
    # threshold 1.0 keeps everything, sorted by score
    np.testing.assert_array_equal(nms(boxes, scores, 1.0), [1, 3, 0, 2, 4])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_nms_matches_reference():
    rng = np.random.default_rng(4)
    boxes = _random_boxes(rng, 60, 50.0)
    scores = rng.permutation(60) / 60.0  # distinct scores
    keep = nms(boxes, scores, 0.4)
    # plain greedy reference
    order = list(np.argsort(-scores))
    ref = []
    iou = box_iou(boxes, boxes)
    while order:
        i = order.pop(0)
        ref.append(i)
        order = [j for j in order if iou[i, j] <= 0.4]
    np.testing.assert_array_equal(keep, ref)
