import numpy as np
import pytest

from stages.groups.quantiles import assign_groups, group_boundaries


def test_boundaries_and_assignment_by_hand():
    areas = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    b = group_boundaries(areas, 4)
    # numpy linear quantiles at 1/4, 2/4, 3/4 of 1..8: 2.75, 4.5, 6.25
    assert np.allclose(b, [2.75, 4.5, 6.25])
    assert assign_groups(areas, b).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_equal_count_groups_on_long_tail(k):
    rng = np.random.default_rng(0)
    areas = rng.pareto(1.5, 10_000) * 50 + 16
    g = assign_groups(areas, group_boundaries(areas, k))
    counts = np.bincount(g, minlength=k)
    assert len(counts) == k
    assert counts.max() - counts.min() <= 2
    # groups are ordered by size
    means = [areas[g == i].mean() for i in range(k)]
    assert means == sorted(means)


def test_errors():
    with pytest.raises(ValueError):
        group_boundaries(np.array([]), 3)
    with pytest.raises(ValueError):
        group_boundaries(np.array([1.0]), 0)
