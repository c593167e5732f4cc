"""The long-tailed area histogram with the scale-group boundaries drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from stages.atomic import save_figure


def plot_area_histogram(areas: np.ndarray, boundaries: np.ndarray, counts: np.ndarray, path: Path) -> None:
    """Histogram of object sides (log scale) with the group boundaries and counts, as a PNG."""

    sides = np.sqrt(np.maximum(np.asarray(areas, dtype=np.float64), 1.0))
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    bins = np.geomspace(sides.min(), sides.max() * 1.001, 40) if sides.max() > sides.min() else 10
    ax.hist(sides, bins=bins, color="#4c72b0", alpha=0.85)
    ax.set_xscale("log")
    for b in np.sqrt(boundaries):
        ax.axvline(b, color="#c44e52", linestyle="--", linewidth=1.5)
        ax.text(b, ax.get_ylim()[1] * 0.95, f" {b:.0f}px", color="#c44e52", va="top", fontsize=8)
    ax.set_xlabel("object size  sqrt(box area)  [px, log scale]")
    ax.set_ylabel("training objects")
    shares = ", ".join(f"G{g + 1}: {c}" for g, c in enumerate(counts))
    ax.set_title(f"{len(sides)} training objects in {len(counts)} scale groups ({shares})", fontsize=9)
    fig.tight_layout()
    save_figure(path, fig)
