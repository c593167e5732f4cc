"""Learn-and-Search diagnostics on a hand-built similarity matrix."""

import numpy as np
import pytest

from stages.metrics.diagnostics import cosine_from_l2, grid_hits, mean_similarity, rank_by_similarity
from stages.metrics.retrieval import recall_at_k

# 2 queries x 6 gallery proposals. Gallery images: 0, 0, 0, 1, 1, 2; classes (-1 = background)
GALLERY_IMAGE = np.array([0, 0, 0, 1, 1, 2])
GALLERY_CLASS = np.array([3, -1, 4, 3, 4, 3])
GALLERY_BOXES = np.array(
    [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [0, 0, 8, 8], [10, 10, 30, 30], [5, 5, 9, 9]], float
)
SIM = np.array(
    [
        # query 0 (image 0, class 3, box [0,0,12,12]): best own-image proposal is row 0 (0.7), centre (5, 5) in box
        [0.7, 0.2, 0.1, 0.9, 0.3, 0.8],
        # query 1 (image 1, class 4, box [12,12,28,28]): best own-image proposal is row 3 (0.6), centre (4, 4) outside
        [0.5, 0.4, 0.95, 0.6, 0.55, -0.2],
    ]
)
QUERY_IMAGE = np.array([0, 1])
QUERY_CLASS = np.array([3, 4])
QUERY_BOX = np.array([[0, 0, 12, 12], [12, 12, 28, 28]], float)


def test_rank_by_similarity():
    ranked, sim = rank_by_similarity(SIM)
    assert ranked.tolist() == [[3, 5, 0, 4, 1, 2], [2, 3, 4, 0, 1, 5]]
    assert sim[:, 0].tolist() == [0.9, 0.95]


def test_similarity_grid_accuracy():
    ranked, _ = rank_by_similarity(SIM)
    np.testing.assert_array_equal(grid_hits(ranked, QUERY_IMAGE, QUERY_BOX, GALLERY_IMAGE, GALLERY_BOXES), [1.0, 0.0])
    # a query whose image has no proposal in the list has no grid: NaN
    got = grid_hits(ranked[:, :2], np.array([2, 7]), QUERY_BOX, GALLERY_IMAGE, GALLERY_BOXES)
    assert got[0] == 1.0 and np.isnan(got[1])  # query 0 as if from image 2: row 5's centre (7, 7) is in its box


def test_mean_positive_and_negative_similarity():
    ranked, sim = rank_by_similarity(SIM)
    rel = GALLERY_CLASS[ranked] == QUERY_CLASS[:, None]  # same class = positive
    pos = mean_similarity(sim, rel)
    neg = mean_similarity(sim, ~rel)
    np.testing.assert_allclose(pos, [(0.7 + 0.9 + 0.8) / 3, (0.95 + 0.55) / 2])
    np.testing.assert_allclose(neg, [(0.2 + 0.1 + 0.3) / 3, (0.5 + 0.4 + 0.6 - 0.2) / 4])
    # empty slots (inf / NaN similarity) are never counted; no positive at all -> NaN
    assert np.isnan(mean_similarity(np.array([[np.inf, 0.2]]), np.array([[True, False]]))[0])


def test_top_k_accuracy_is_class_hit_at_k():
    ranked, _ = rank_by_similarity(SIM)
    rel = GALLERY_CLASS[ranked] == QUERY_CLASS[:, None]
    # query 0: rank 1 is row 3 (class 3): hit at 1; query 1: row 2 (class 4): hit at 1
    np.testing.assert_array_equal(recall_at_k(rel, 1), [1, 1])
    # with query 1 asking for class 3: rows 2, 3 -> row 3 at rank 2 has class 3
    rel = GALLERY_CLASS[ranked] == np.array([3, 3])[:, None]
    np.testing.assert_array_equal(recall_at_k(rel, 1), [1, 0])
    np.testing.assert_array_equal(recall_at_k(rel, 5), [1, 1])


def test_cosine_from_l2():
    a, b = np.array([1.0, 0.0]), np.array([0.6, 0.8])
    assert cosine_from_l2(np.sum((a - b) ** 2)) == pytest.approx(0.6)
