"""The groups stage: assign every training object to one of `groups` scale groups."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from stages import layout
from stages.atomic import write_json, write_parquet
from stages.config import Params
from stages.groups.plot import plot_area_histogram
from stages.groups.quantiles import assign_groups, group_boundaries

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("groups",)


def run(params: Params) -> None:
    """Assign each training object its scale group (area quantiles) and draw the size histogram."""
    out = layout.GROUPS
    objects = pd.read_parquet(layout.SPLITS / "train_objects.parquet")
    areas = objects["area"].to_numpy(np.float64)
    boundaries = group_boundaries(areas, params.groups)
    group = assign_groups(areas, boundaries)
    counts = np.bincount(group, minlength=params.groups)
    write_parquet(out / "assignment.parquet", pd.DataFrame({"object_id": objects["object_id"], "group": group}))
    info = {
        "groups": params.groups,
        "area_boundaries": [float(b) for b in boundaries],  # exact: the routed retrieval head reads them
        "side_boundaries_px": [round(float(np.sqrt(b)), 3) for b in boundaries],
        "counts": counts.tolist(),
    }
    write_json(out / "boundaries.json", info)
    plot_area_histogram(areas, boundaries, counts, out / "area_hist.png")
    log.info(
        "groups: %d groups, sizes %s, side boundaries %s px", params.groups, counts.tolist(), info["side_boundaries_px"]
    )
