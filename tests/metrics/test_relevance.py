"""Relevance labels and relevance matrices, against brute force and hand-made cases."""

import numpy as np
import pytest
import scipy.sparse as sp
from pycocotools import mask as mask_utils

from stages.metrics.relevance import relevance_matrix, relevant_classes


def _random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size * 0.8, size=(n, 2))
    wh = rng.uniform(2, size * 0.5, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _brute_force(g_img, g_box, t_img, t_box, t_cls, thr, n_classes):
    out = np.zeros((len(g_img), n_classes), dtype=bool)

    def to_xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    for g in range(len(g_img)):
        for t in range(len(t_img)):
            if g_img[g] != t_img[t]:
                continue
            iou = mask_utils.iou([to_xywh(g_box[g])], [to_xywh(t_box[t])], [0])[0, 0]
            if (iou > 1e-10) if thr <= 1e-10 else (iou >= thr):
                out[g, t_cls[t]] = True
    return out


@pytest.mark.parametrize("thr", [0.3, 1e-10, 0.0])
def test_relevant_classes_matches_brute_force(thr):
    rng = np.random.default_rng(7)
    n_g, n_t, n_cls = 100, 40, 6
    # image ids not contiguous, not sorted; image 99 has gallery boxes but no GT, 55 GT but no gallery
    g_img = rng.choice([3, 10, 42, 99, 7], size=n_g)
    t_img = rng.choice([3, 10, 42, 7, 55], size=n_t)
    g_box = _random_boxes(rng, n_g)
    t_box = _random_boxes(rng, n_t)
    # a few gallery boxes copy a GT box exactly (IoU 1) and one only touches a GT box (IoU 0)
    g_img[:5], g_box[:5] = t_img[:5], t_box[:5]
    g_img[5] = t_img[0]
    g_box[5] = [t_box[0, 2], t_box[0, 1], t_box[0, 2] + 5, t_box[0, 3]]
    t_cls = rng.integers(0, n_cls, size=n_t)

    got = relevant_classes(g_img, g_box, t_img, t_box, t_cls, thr, n_classes=n_cls)
    assert sp.issparse(got) and got.format == "csr" and got.dtype == bool
    assert got.shape == (n_g, n_cls)
    expected = _brute_force(g_img, g_box, t_img, t_box, t_cls, thr, n_cls)
    np.testing.assert_array_equal(got.toarray(), expected)
    assert expected.any() and not expected.all()
    assert not expected[g_img == 99].any()


def test_relevant_classes_threshold_boundary_and_default_classes():
    # gallery box [0,0,10,10] vs GT [5,0,15,10]: IoU = 50 / 150 = 1/3
    g_img, g_box = np.array([1, 1]), np.array([[0, 0, 10, 10], [10, 0, 20, 10]], float)
    t_img, t_box, t_cls = np.array([1]), np.array([[5, 0, 15, 10]], float), np.array([2])
    assert relevant_classes(g_img, g_box, t_img, t_box, t_cls, 1 / 3).toarray().tolist() == [
        [False, False, True],
        [False, False, True],
    ]
    assert not relevant_classes(g_img, g_box, t_img, t_box, t_cls, 0.34).toarray().any()
    # any overlap: both overlap by half a box
    assert relevant_classes(g_img, g_box, t_img, t_box, t_cls, 1e-10)[:, 2].toarray().all()


def test_relevant_classes_empty():
    got = relevant_classes(
        np.array([1, 2]), np.zeros((2, 4)), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0, int), 0.3, n_classes=4
    )
    assert got.shape == (2, 4) and got.nnz == 0
    got = relevant_classes(
        np.zeros(0, int), np.zeros((0, 4)), np.array([1]), np.array([[0, 0, 1, 1.0]]), np.array([1]), 0.3
    )
    assert got.shape == (0, 2)


# gallery: 6 objects in 3 images; labels (classes 0..2)
#   g0 img 10 {0}   g1 img 10 {1}   g2 img 20 {0, 1}   g3 img 20 {}   g4 img 30 {0}   g5 img 30 {0}
GALLERY_IMAGE = np.array([10, 10, 20, 20, 30, 30])
LABELS = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=bool))


def test_relevance_matrix_basic():
    ranked = np.array(
        [
            [0, 3, 4, -1],  # class 0
            [2, 1, 0, 5],  # class 1
            [0, 1, 2, 3],  # class 2: nothing relevant anywhere
            [-1, -1, -1, -1],  # class 0, empty result
        ]
    )
    rel, total = relevance_matrix(ranked, np.array([0, 1, 2, 0]), LABELS)
    assert rel.dtype == bool and rel.shape == (4, 4)
    assert rel.tolist() == [
        [True, False, True, False],
        [True, True, False, False],
        [False, False, False, False],
        [False, False, False, False],
    ]
    assert total.dtype == np.int64 and total.tolist() == [4, 2, 0, 4]


def test_relevance_matrix_exclude_same_image():
    ranked = np.array(
        [
            [0, 4, 2, 5],  # query in image 10, class 0: g0 dropped -> [4, 2, 5, _]
            [4, 5, 0, -1],  # query in image 30, class 0: g4, g5 dropped -> [0, _, _, _]
            [3, 2, 1, 0],  # query in image 99 (not in gallery), class 1: nothing dropped
            [2, 0, 3, 1],  # query in image 20, class 1: g2, g3 dropped -> [0, 1, _, _]
        ]
    )
    q_cls = np.array([0, 0, 1, 1])
    q_img = np.array([10, 30, 99, 20])
    rel, total = relevance_matrix(ranked, q_cls, LABELS, q_img, GALLERY_IMAGE, exclude_same_image=True)
    assert rel.tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [False, True, True, False],
        [False, True, False, False],
    ]
    # class 0 has 4 relevant (g0, g2, g4, g5); image 10 holds 1 of them, image 30 holds 2
    assert total.tolist() == [3, 2, 2, 1]

    rel_keep, total_keep = relevance_matrix(ranked, q_cls, LABELS, q_img, GALLERY_IMAGE)
    assert rel_keep.tolist()[1] == [True, True, True, False]
    assert total_keep.tolist() == [4, 4, 2, 2]


def test_relevance_matrix_exclude_needs_images():
    with pytest.raises(ValueError):
        relevance_matrix(np.zeros((1, 2), int), np.array([0]), LABELS, exclude_same_image=True)


def test_relevance_matrix_out_of_range_class_and_index():
    rel, total = relevance_matrix(np.array([[0, 1]]), np.array([7]), LABELS)
    assert not rel.any() and total.tolist() == [0]
    with pytest.raises(ValueError):
        relevance_matrix(np.array([[6]]), np.array([0]), LABELS)


def test_end_to_end_with_metrics():
    from stages.metrics.retrieval import ap_standard, ap_truncated

    ranked = np.array([[0, 4, 2, 5]])
    rel, total = relevance_matrix(ranked, np.array([0]), LABELS, np.array([10]), GALLERY_IMAGE, True)
    # after exclusion: [g4, g2, g5] all relevant, 3 relevant in the gallery outside image 10
    assert ap_truncated(rel)[0] == pytest.approx(1.0)
    assert ap_standard(rel, total)[0] == pytest.approx(1.0)


def test_max_iou_single_label_hand_computed():
    from stages.metrics.relevance import gallery_labels, max_iou_classes

    # image 1: GT 0 class 0 = [0,0,10,10], GT 1 class 1 = [4,0,14,10], GT 2 class 2 = [20,20,30,30]
    t_img = np.array([1, 1, 1])
    t_box = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [20, 20, 30, 30]], float)
    t_cls = np.array([0, 1, 2])
    g_img = np.array([1, 1, 1, 1, 2])
    g_box = np.array(
        [
            [1, 0, 11, 10],  # IoU 90/110 = 0.818 with GT 0, 70/130 = 0.538 with GT 1 -> class 0 only
            [3, 0, 13, 10],  # IoU 70/130 with GT 0, 90/110 with GT 1 -> class 1 only
            [2, 0, 12, 10],  # IoU 80/120 with both: a tie -> the first GT box (class 0)
            [25, 25, 40, 40],  # IoU 25/300 = 0.083 with GT 2: image level only
            [0, 0, 10, 10],  # image 2 has no GT box
        ],
        float,
    )
    obj = max_iou_classes(g_img, g_box, t_img, t_box, t_cls, 0.3, n_classes=3).toarray()
    assert obj.tolist() == [
        [True, False, False],
        [False, True, False],
        [True, False, False],
        [False, False, False],
        [False, False, False],
    ]
    img = max_iou_classes(g_img, g_box, t_img, t_box, t_cls, 1e-10, n_classes=3).toarray()
    assert img[3].tolist() == [False, False, True] and img.sum(axis=1).tolist() == [1, 1, 1, 1, 0]
    # the multi-label rule makes rows 0-2 relevant to both classes 0 and 1
    multi = relevant_classes(g_img, g_box, t_img, t_box, t_cls, 0.3, n_classes=3).toarray()
    assert multi[:3, :2].all() and not multi[:3, 2].any()
    # the tie goes to whichever GT box is listed first: swap the two boxes' order -> class 1
    swapped = max_iou_classes(g_img, g_box, t_img, t_box[[1, 0, 2]], t_cls[[1, 0, 2]], 0.3, n_classes=3)
    assert swapped.toarray()[2].tolist() == [False, True, False]
    # gallery_labels dispatches on the rule name
    args = (g_img, g_box, t_img, t_box, t_cls)
    assert (gallery_labels("max_iou", *args, iou_threshold=0.3, n_classes=3).toarray() == obj).all()
    assert (gallery_labels("multi_label", *args, iou_threshold=0.3, n_classes=3).toarray() == multi).all()
    with pytest.raises(ValueError, match="labelling"):
        gallery_labels("vote", *args, iou_threshold=0.3)


def test_max_iou_below_threshold_is_not_rescued_by_another_box():
    from stages.metrics.relevance import max_iou_classes

    # the max-IoU box is class 0's (IoU 0.25 >= 0.2); class 1's box, IoU 0.087, does not count
    t_box = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], float)
    g_box = np.array([[0, 0, 10, 40]], float)  # IoU 100/400 = 0.25 with GT 0, 40/460 with GT 1
    got = max_iou_classes([1], g_box, [1, 1], t_box, [0, 1], 0.2, n_classes=2).toarray()
    assert got.tolist() == [[True, False]]
    # a class that passes the threshold but is not the maximum is not relevant (multi-label would say it is)
    g_box = np.array([[4, 0, 14, 10]], float)  # IoU 60/140 = 0.43 with GT 0, 80/120 = 0.67 with GT 1
    assert max_iou_classes([1], g_box, [1, 1], t_box, [0, 1], 0.3, n_classes=2).toarray().tolist() == [[False, True]]
    assert relevant_classes([1], g_box, [1, 1], t_box, [0, 1], 0.3, n_classes=2).toarray().tolist() == [[True, True]]


@pytest.mark.parametrize("thr", [0.3, 1e-10])
def test_max_iou_matches_brute_force(thr):
    from stages.metrics.relevance import max_iou_classes

    rng = np.random.default_rng(11)
    n_g, n_t, n_cls = 120, 40, 5
    g_img, t_img = rng.choice([3, 10, 7], size=n_g), rng.choice([3, 10, 7], size=n_t)
    g_box, t_box = _random_boxes(rng, n_g), _random_boxes(rng, n_t)
    t_cls = rng.integers(0, n_cls, size=n_t)
    got = max_iou_classes(g_img, g_box, t_img, t_box, t_cls, thr, n_classes=n_cls).toarray()
    expected = np.zeros_like(got)
    for g in range(n_g):
        best, best_t = 0.0, -1
        for t in range(n_t):  # strict >: the first GT box wins ties, as in the authors' loop
            if t_img[t] != g_img[g]:
                continue
            x = mask_utils.iou(
                [[*g_box[g, :2], *(g_box[g, 2:] - g_box[g, :2])]],
                [[*t_box[t, :2], *(t_box[t, 2:] - t_box[t, :2])]],
                [0],
            )[0, 0]
            if x > best:
                best, best_t = x, t
        if best_t >= 0 and ((best > 1e-10) if thr <= 1e-10 else (best >= thr - 1e-12)):
            expected[g, t_cls[best_t]] = True
    np.testing.assert_array_equal(got, expected)
    assert got.sum(axis=1).max() == 1 and got.any()


def test_own_image_hits_and_drop_same_image_values():
    from stages.metrics.relevance import drop_same_image, own_image_hits

    gallery_image = np.array([5, 5, 6, 7])
    foreground = np.array([False, True, True, True])
    ranked = np.array([[0, 2, 1, -1], [3, 2, 0, 1]])
    q_img = np.array([5, 6])
    assert own_image_hits(ranked, q_img, gallery_image).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    assert own_image_hits(ranked, q_img, gallery_image, foreground).tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    dist = np.array([[0.1, 0.2, 0.3, np.inf], [0.1, 0.2, 0.3, 0.4]])
    shown, d = drop_same_image(ranked, q_img, gallery_image, dist)
    assert shown.tolist() == [[2, -1, -1, -1], [3, 0, 1, -1]]
    assert d.tolist() == [[0.2, np.inf, np.inf, np.inf], [0.1, 0.3, 0.4, np.inf]]
    assert drop_same_image(ranked, q_img, gallery_image).tolist() == shown.tolist()


def test_single_label_gather_equals_the_sorted_key_lookup():
    """A gallery with one class at most per row is looked up by a gather of each row's class; it
    gives what the general sorted-key lookup gives (out-of-range classes and -1 slots included)."""
    from stages.metrics.relevance import RelevanceLookup

    rng = np.random.default_rng(5)
    g, c = 60, 4
    cls = rng.integers(-1, c, g)  # -1: an unlabelled row
    labels = sp.csr_matrix((np.ones((cls >= 0).sum(), bool), (np.flatnonzero(cls >= 0), cls[cls >= 0])), (g, c))
    fast = RelevanceLookup(labels)
    general = RelevanceLookup(labels)
    general.row_class = None
    assert fast.row_class is not None and fast.row_class.tolist() == cls.tolist()
    ranked = rng.integers(-1, g, (9, 25))
    q_cls = np.array([0, 1, 2, 3, 0, 1, 7, -1, 2])
    rel = fast.relevant(ranked, q_cls)
    np.testing.assert_array_equal(rel, general.relevant(ranked, q_cls))
    assert rel[0].tolist() == [(r >= 0) and cls[r] == 0 for r in ranked[0]] and rel.any()
    assert not rel[6:8].any()
    multi = labels.tolil()
    multi[0, (cls[0] + 1) % c] = True  # one row with two classes: the general lookup
    assert RelevanceLookup(multi.tocsr()).row_class is None
