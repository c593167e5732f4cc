"""Retrieval metrics on hand-computed rankings."""

import json

import numpy as np
import pytest

from stages.metrics.retrieval import (
    ap_standard,
    ap_truncated,
    metric_keys,
    mp_at_k,
    precision_at_k,
    recall_at_k,
    summarize,
)

# query 0: [1,0,1,0], 3 relevant in gallery
# query 1: nothing relevant returned, 2 relevant in gallery
# query 2: all relevant, 4 relevant in gallery
# query 3: [0,1,0,0] where the last two slots were -1 padding (False), 1 relevant in gallery
# query 4: nothing relevant anywhere
REL = np.array(
    [
        [1, 0, 1, 0],
        [0, 0, 0, 0],
        [1, 1, 1, 1],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)
TOTAL = np.array([3, 2, 4, 1, 0])


def test_recall_at_k():
    np.testing.assert_array_equal(recall_at_k(REL, 1), [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(recall_at_k(REL, 2), [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(recall_at_k(REL, 10), [1, 0, 1, 1, 0])  # k beyond K


def test_ap_truncated():
    expected = [(1 / 1 + 2 / 3) / 2, 0.0, 1.0, 1 / 2, 0.0]
    np.testing.assert_allclose(ap_truncated(REL), expected)
    assert ap_truncated(REL)[0] == pytest.approx(0.8333, abs=1e-4)


def test_ap_standard():
    got = ap_standard(REL, TOTAL)
    np.testing.assert_allclose(got[:4], [(1 + 2 / 3) / 3, 0.0, 1.0, 1 / 2])
    assert np.isnan(got[4])
    # the same list with more relevant items left in the gallery scores lower
    assert ap_standard(REL[2:3], [8])[0] == pytest.approx(4 / 8)


def test_ap_standard_rejects_inconsistent_total():
    with pytest.raises(ValueError):
        ap_standard(REL, [1, 0, 4, 1, 0])


def test_precision_and_mp():
    np.testing.assert_allclose(precision_at_k(REL, 2), [0.5, 0, 1, 0.5, 0])
    np.testing.assert_allclose(precision_at_k(REL, 5), [2 / 5, 0, 4 / 5, 1 / 5, 0])  # empty slots miss
    # UnED's mMP@k: only the first min(k, n) ranks count. Query 3 has n = 1 and its hit at rank 2: 0.
    mp = mp_at_k(REL, TOTAL, 5)
    np.testing.assert_allclose(mp[:4], [2 / 3, 0 / 2, 4 / 4, 0 / 1])
    assert np.isnan(mp[4])
    np.testing.assert_allclose(mp_at_k(REL, TOTAL, 2)[:4], [1 / 2, 0, 2 / 2, 0])
    # the study's case: one relevant item in the gallery, returned at rank 3 -> 0 (the old rule gave 1)
    assert mp_at_k(np.array([[0, 0, 1, 0, 0]], bool), [1], 5).tolist() == [0.0]
    # n = 3 relevant, hits at ranks 1 and 4: the first 3 ranks hold 1 hit -> 1/3
    assert mp_at_k(np.array([[1, 0, 0, 1, 0]], bool), [3], 5)[0] == pytest.approx(1 / 3)
    # a list shorter than min(k, n) counts its hits over min(k, n)
    assert mp_at_k(np.array([[1, 1]], bool), [9], 5)[0] == pytest.approx(2 / 5)


def test_empty_list_width():
    rel = np.zeros((3, 0), dtype=bool)
    np.testing.assert_array_equal(ap_truncated(rel), [0, 0, 0])
    np.testing.assert_array_equal(recall_at_k(rel, 5), [0, 0, 0])
    np.testing.assert_array_equal(ap_standard(rel, [1, 2, 3]), [0, 0, 0])


def test_summarize_masks():
    known = np.array([True, True, False, False, True])
    masks = {"all": np.ones(5, bool), "known": known, "unknown": ~known, "none": np.zeros(5, bool)}
    s = summarize(REL, TOTAL, masks)
    json.dumps(s)  # serialisable
    assert set(s) == set(masks)
    keys = ["queries", "no_relevant"] + metric_keys()
    for entry in s.values():
        assert list(entry) == keys

    a = s["all"]
    assert a["queries"] == 5 and a["no_relevant"] == 1
    assert a["R@1"] == pytest.approx(40.0)
    assert a["R@5"] == pytest.approx(60.0)
    assert a["R@10"] == pytest.approx(60.0)
    assert a["mAP"] == round(100 * ((1 + 2 / 3) / 2 + 0 + 1 + 0.5 + 0) / 5, 4)
    assert a["mAP_std"] == round(100 * ((1 + 2 / 3) / 3 + 0 + 1 + 0.5) / 4, 4)  # query 4 excluded
    assert a["P@5"] == pytest.approx(100 * (2 + 0 + 4 + 1 + 0) / 25)
    assert a["mMP@5"] == pytest.approx(100 * (2 / 3 + 0 + 1 + 0) / 4, abs=1e-4)
    assert isinstance(a["mAP"], float)

    k = s["known"]  # queries 0, 1, 4
    assert k["queries"] == 3 and k["no_relevant"] == 1
    assert k["R@1"] == pytest.approx(100 / 3, abs=1e-4)
    assert k["mAP"] == round(100 * (5 / 6) / 3, 4)
    assert k["mAP_std"] == round(100 * (5 / 9) / 2, 4)

    u = s["unknown"]  # queries 2, 3
    assert u["queries"] == 2 and u["R@1"] == 50.0 and u["R@5"] == 100.0
    assert u["mAP"] == 75.0 and u["mAP_std"] == 75.0 and u["mMP@5"] == 50.0

    n = s["none"]
    assert n["queries"] == 0 and n["no_relevant"] == 0
    assert all(n[key] is None for key in metric_keys())


def test_summarize_all_excluded_gives_none_for_std():
    s = summarize(REL[4:], TOTAL[4:], {"all": np.ones(1, bool)})["all"]
    assert s["mAP"] == 0.0 and s["R@1"] == 0.0
    assert s["mAP_std"] is None and s["mMP@5"] is None


def test_summarize_custom_ks():
    s = summarize(REL, TOTAL, {"all": np.ones(5, bool)}, ks=(2,))["all"]
    assert "R@2" in s and "R@1" not in s and s["R@2"] == 60.0


def test_bad_shapes():
    with pytest.raises(ValueError):
        recall_at_k(np.zeros(4, bool), 1)
    with pytest.raises(ValueError):
        recall_at_k(REL, 0)
    with pytest.raises(ValueError):
        summarize(REL, TOTAL, {"all": np.ones(3, bool)})


def test_long_list_map_and_its_top_k_truncation():
    from stages.metrics.retrieval import per_query_metrics

    # relevant at ranks 1, 3 in the top 4, then at rank 8 (of a 10-item list)
    rel = np.zeros((1, 10), bool)
    rel[0, [0, 2, 7]] = True
    got = per_query_metrics(rel, np.array([4]), short=4)
    assert got["mAP"][0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 8) / 3)  # the whole (long) list
    assert got["mAP@4"][0] == pytest.approx((1 / 1 + 2 / 3) / 2)  # top 4 only: higher
    assert got["mAP_std"][0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 8) / 4)  # one relevant item never returned
    assert "mAP@4" in metric_keys(short=4) and "mAP@4" not in metric_keys()


def test_reciprocal_rank():
    from stages.metrics.retrieval import reciprocal_rank

    hit = np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_allclose(reciprocal_rank(hit), [1 / 3, 1.0, 0.0])


def test_interpolated_precision_hand_computed():
    from stages.metrics.retrieval import interpolated_precision

    # query 0: relevant at ranks 1, 3, 6 of 6; 4 relevant in the gallery (one never returned)
    #   precision at the hits: 1/1, 2/3, 3/6; recall after them: 0.25, 0.5, 0.75
    # query 1: nothing relevant in the gallery -> NaN; query 2: relevant at rank 2 only, n = 1
    rel = np.array([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]], bool)
    levels = [0.0, 0.25, 0.3, 0.5, 0.75, 0.8, 1.0]
    got = interpolated_precision(rel, np.array([4, 0, 1]), levels)
    np.testing.assert_allclose(got[0], [1.0, 1.0, 2 / 3, 2 / 3, 0.5, 0.0, 0.0])
    assert np.isnan(got[1]).all()
    np.testing.assert_allclose(got[2], [0.5] * 7)
    # precision is interpolated from the right: a later, higher precision lifts an earlier level
    rel = np.array([[0, 1, 1, 1]], bool)  # precision 1/2, 2/3, 3/4 at recall 1/3, 2/3, 1
    np.testing.assert_allclose(interpolated_precision(rel, [3], [0.0, 0.5, 1.0])[0], [0.75, 0.75, 0.75])


def test_percent_of_all():
    from stages.metrics.retrieval import percent_of_all

    hits = np.array([1.0, 0.0, 1.0, 1.0, np.nan])
    known = np.array([True, True, False, False, True])
    # known hits (1) over all 4 queries with a value: 25 %; unknown 2 / 4 = 50 %; they add up to all (75 %)
    assert percent_of_all(hits, known) == 25.0 and percent_of_all(hits, ~known) == 50.0
    assert percent_of_all(np.array([np.nan]), np.array([True])) is None
