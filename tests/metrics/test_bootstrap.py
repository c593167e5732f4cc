"""Bootstrap intervals on constructed cases with known answers."""

import numpy as np
import pytest

from stages.metrics import bootstrap
from stages.metrics.bootstrap import bootstrap_ci, bootstrap_means, paired_bootstrap


def test_constant_values_give_a_point_interval():
    assert bootstrap_ci(np.full(50, 0.7), 200, seed=1) == pytest.approx((0.7, 0.7))


def test_two_values_exact_distribution():
    # the mean of 2 draws from {0, 1}: 0 w.p. 1/4, 1/2 w.p. 1/2, 1 w.p. 1/4, so the 2.5 % and 97.5 %
    # quantiles are exactly 0 and 1
    assert bootstrap_ci([0.0, 1.0], 4000, seed=0) == (0.0, 1.0)
    means = bootstrap_means([0.0, 1.0], 40000, seed=0)
    for value, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(means == value) == pytest.approx(p, abs=0.01)


def test_bernoulli_interval_matches_the_normal_approximation():
    # 10,000 queries, 30 % hits: the mean's standard error is sqrt(0.3 * 0.7 / 10,000) = 0.00458
    values = np.zeros(10_000)
    values[:3000] = 1.0
    low, high = bootstrap_ci(values, 2000, seed=3)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 10_000)
    assert low == pytest.approx(0.3 - half, abs=0.0015) and high == pytest.approx(0.3 + half, abs=0.0015)


def test_seeded_nan_ignored_empty_none_and_blocks(monkeypatch):
    values = np.random.default_rng(0).random(300)
    assert bootstrap_ci(values, 500, seed=4) == bootstrap_ci(values, 500, seed=4)
    assert bootstrap_ci(values, 500, seed=4) != bootstrap_ci(values, 500, seed=5)
    assert bootstrap_ci(np.r_[values, np.nan], 500, seed=4) == bootstrap_ci(values, 500, seed=4)
    assert bootstrap_ci([np.nan, np.nan], 100) is None and bootstrap_ci([], 100) is None
    monkeypatch.setattr(bootstrap, "BLOCK_ENTRIES", 1000)  # many blocks: still 500 means in the interval's range
    means = bootstrap_means(values, 500, seed=4)
    assert means.shape == (500,) and values.min() <= means.min() and means.max() <= values.max()
    with pytest.raises(ValueError):
        bootstrap_ci(values, 10, level=1.0)


def test_paired_bootstrap_separates_a_shift_and_not_noise():
    rng = np.random.default_rng(1)
    b = rng.random(2000)
    # a is b plus a constant 0.01: every resample's difference is exactly 0.01
    shifted = paired_bootstrap(b + 0.01, b, 500, seed=0)
    assert shifted["diff"] == pytest.approx(0.01) and shifted["separated"]
    assert shifted["low"] == pytest.approx(0.01) and shifted["high"] == pytest.approx(0.01)
    # the same values in another order per query: mean difference 0, the interval covers 0
    same = paired_bootstrap(rng.permutation(b), b, 500, seed=0)
    assert same["low"] < 0 < same["high"] and not same["separated"] and same["queries"] == 2000
    # NaN on either side leaves the query out
    a = b.copy()
    a[:10] = np.nan
    assert paired_bootstrap(a, b, 100)["queries"] == 1990
    assert paired_bootstrap([np.nan], [1.0], 100) is None
    with pytest.raises(ValueError):
        paired_bootstrap(b, b[:5])


def test_paired_interval_is_narrower_than_unpaired_on_correlated_queries():
    rng = np.random.default_rng(2)
    hard = rng.random(1000)  # query difficulty shared by both methods
    a, b = hard + 0.02 + rng.normal(0, 0.01, 1000), hard + rng.normal(0, 0.01, 1000)
    paired = paired_bootstrap(a, b, 1000, seed=0)
    lo_a, hi_a = bootstrap_ci(a, 1000, seed=0)
    assert paired["separated"] and (paired["high"] - paired["low"]) < (hi_a - lo_a) / 5


def _methods_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "methods.py"
    spec = importlib.util.spec_from_file_location("methods_benchmark", path)
    methods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(methods)
    return methods


def test_methods_benchmark_compares_every_pair_on_the_same_queries():
    import pandas as pd

    methods = _methods_benchmark()
    rng = np.random.default_rng(0)
    base = rng.random(1500)
    q = np.arange(1500)

    def table(shift):
        return pd.DataFrame({"query": q, **{m: np.clip(base + shift, 0, 1) for m in methods.HEADLINE}})

    got = methods.paired_comparisons({"ntxent": table(0.05), "stml": table(0.0), "none": table(0.0)}, seed=0)
    assert got["ntxent_vs_stml_s0_O-mAP_separated"] and not got["stml_vs_none_s0_O-mAP_separated"]
    assert got["ntxent_vs_stml_s0_O-R@1_diff"] > 0 and len(got["ntxent_vs_none_s0_I-mAP_ci95"]) == 2
    assert {k.split("_s0_")[0] for k in got} == {"ntxent_vs_stml", "ntxent_vs_none", "stml_vs_none"}
    with pytest.raises(ValueError, match="same queries"):
        methods.paired_comparisons({"a": table(0), "b": table(0).iloc[::-1].reset_index(drop=True)}, seed=0)


def test_methods_report_rows_and_recorded_pairs():
    methods = _methods_benchmark()
    result = {f"stml_s{s}_{m}": v for s, v in ((0, 40.0), (2, 50.0)) for m in methods.HEADLINE}
    result |= {f"stml_s{s}_size_0-20_O-mAP_std": v for s, v in ((0, 30.0), (2, 31.0))}
    result |= {"none_vs_stml_s2_O-R@1_diff": -1.0}
    (row,) = methods.summary_rows(result, ["stml"], [0, 1, 2])
    cells = row.strip("| ").split(" | ")
    assert cells[:3] == ["stml", "0,2", "45.00 (40.00–50.00)"]  # seed 1 never ran: not counted
    assert cells[-1] == "30.50 (30.00–31.00)" and cells[-2] == "—"  # small O-R@1 not recorded
    assert methods.recorded_pairs(result, ["stml", "none"], [0, 1, 2]) == [("none_vs_stml", 2)]
