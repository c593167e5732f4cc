"""Scale groups: equal-count groups of objects by box area (paper IV-B)."""

from __future__ import annotations

import numpy as np

from stages.errors import InputError


def group_boundaries(areas: np.ndarray, k: int) -> np.ndarray:
    """The k-1 inner area boundaries that split ``areas`` into k equal-count groups (quantiles)."""
    if k < 1:
        raise InputError(f"the number of groups must be >= 1, got {k}")
    if len(areas) == 0:
        raise InputError("cannot form scale groups from zero objects")
    return np.quantile(np.asarray(areas, dtype=np.float64), np.arange(1, k) / k)


def assign_groups(areas: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Group index 0..k-1 of each area: group g holds boundaries[g-1] <= area < boundaries[g]."""
    return np.searchsorted(np.asarray(boundaries), np.asarray(areas, dtype=np.float64), side="right").astype(np.int64)
