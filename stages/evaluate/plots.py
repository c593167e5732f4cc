"""Pictures of an evaluation: per-size-bucket bars and a retrieval-examples sheet (paper Fig. 7/9).

* ``buckets.csv``: one row per query-size bucket of the trained model (bucket, queries, O-R@1,
  O-mAP, I-R@1, I-mAP) -- a DVC plot (``bar_horizontal``), so ``dvc plots diff`` compares runs;
  ``buckets.png``: the same bars for the trained model next to the untrained backbone.
* ``pr/<subset>.csv``: the object-level precision-recall curve (mean interpolated precision at
  recall 0, 0.05, ..., 1) of all queries and of each size bucket, trained model (``precision``)
  and untrained backbone (``pretrained``) -- a DVC plot (x recall, y precision), one per subset;
  ``pr.png``: the six curves, the trained model next to the untrained backbone.
* ``examples.png``: a few queries (seeded, spread over the size buckets) and their top-5 gallery
  objects, each drawn on its image, green when relevant (object level), red when not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from stages.atomic import atomic_path, save_figure
from stages.crops import crop_boxes, read_image
from stages.evaluate.definitions import BUCKET_COLUMNS, PR_SUBSETS, SIZE_BUCKETS
from stages.evaluate.protocol import Evaluation
from stages.metrics.retrieval import PR_LEVELS
from stages.shards import BOX_COLUMNS
from stages.tables import ImageTable

GREEN, RED = "#1a9850", "#d73027"


def bucket_table(metrics: dict, embedding: str = "model") -> pd.DataFrame:
    """Per-size-bucket rows of one embedding's metrics (None -> empty cell)."""
    rows = []
    for bucket in SIZE_BUCKETS:
        entry = metrics[embedding][bucket]
        rows.append({"bucket": bucket, "queries": entry["queries"], **{k: entry.get(k) for k in BUCKET_COLUMNS}})
    return pd.DataFrame(rows)


def _save(fig: Figure, path: Path) -> None:
    save_figure(path, fig, dpi=110)


def write_bucket_plots(metrics: dict, plots_dir: Path) -> None:
    """``buckets.csv`` (trained model) and ``buckets.png`` (model vs pretrained, O-R@1 and O-mAP)."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    table = bucket_table(metrics, "model")
    with atomic_path(plots_dir / "buckets.csv") as tmp:
        table.to_csv(tmp, index=False)

    names = [e for e in ("model", "pretrained") if e in metrics]
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(table))
    height = 0.8 / len(names)
    for ax, key in zip(axes, ("O-R@1", "O-mAP")):
        for j, name in enumerate(names):
            values = bucket_table(metrics, name)[key].astype(float).to_numpy()
            bars = ax.barh(
                y + (j - (len(names) - 1) / 2) * height,
                np.nan_to_num(values),
                height,
                label=name,
                color=("#4575b4", "#bbbbbb")[j % 2],
            )
            ax.bar_label(
                bars, labels=["no query" if np.isnan(v) else f"{v:.1f}" for v in values], fontsize=8, padding=2
            )
        ax.set_title(key + (f" (paper mAP, list of {metrics.get('map_list', '?')})" if key == "O-mAP" else ""))
        ax.set_xlim(0, 110)
        ax.set_xlabel("%")
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{b.removeprefix('size_')} px\n({q} queries)" for b, q in zip(table["bucket"], table["queries"])]
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Retrieval by query size (sqrt area), gallery {metrics.get('gallery', '?')} objects")
    fig.tight_layout()
    _save(fig, plots_dir / "buckets.png")


def write_examples_sheet(
    examples: dict,
    queries: pd.DataFrame,
    gallery: pd.DataFrame,
    images: pd.DataFrame,
    class_names: dict,
    path: Path,
    crop_size: int = 96,
) -> None:
    """One row per example query: its crop, then its top-5 objects boxed on their images.

    ``examples`` maps a query row to ``(gallery rows, distances, relevant flags)`` of its top 5.
    """
    path = Path(path)
    if not examples:
        fig = Figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no example queries", ha="center", va="center")
        _save(fig, path)
        return
    paths = images.set_index("image_id")["path"]
    rows = sorted(examples, key=lambda q: float(queries["area"].iloc[q]))  # small to large
    fig = Figure(figsize=(13, 2.3 * len(rows)))
    axes = fig.subplots(len(rows), 6, squeeze=False)
    for r, q in enumerate(rows):  # a handful of example queries
        qrow = queries.iloc[q]
        image = read_image(paths.get(int(qrow.image_id), ""))
        ax = axes[r, 0]
        if image is not None:
            ax.imshow(crop_boxes(image, np.asarray([qrow[BOX_COLUMNS]], np.float64), max(crop_size, 96))[0])
        side = float(np.sqrt(qrow["area"]))
        ax.set_title(f"query: {class_names.get(int(qrow.category_id), qrow.category_id)}\n{side:.0f} px", fontsize=9)
        ranked, dist, rel = examples[q]
        for c in range(5):
            ax = axes[r, c + 1]
            if c >= len(ranked) or ranked[c] < 0:
                continue
            g = gallery.iloc[int(ranked[c])]
            img = read_image(paths.get(int(g.image_id), ""))
            if img is not None:
                ax.imshow(img)
            x1, y1, x2, y2 = (float(v) for v in g[BOX_COLUMNS])
            colour = GREEN if rel[c] else RED
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2.5))
            ax.set_title(
                f"#{c + 1} {'relevant' if rel[c] else 'not relevant'}  d={dist[c]:.2f}", fontsize=8, color=colour
            )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "Retrieval examples: query crop, top-5 gallery objects (green: relevant at IoU >= threshold, red: not)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * len(rows))))
    _save(fig, path)


def pr_table(pr: dict, subset: str) -> pd.DataFrame:
    """One subset's curve: recall, precision (trained model) and pretrained (untrained backbone)."""
    table = pd.DataFrame({"recall": np.round(PR_LEVELS, 4)})
    for column, name in (("precision", "model"), ("pretrained", "pretrained")):
        if name in pr:
            table[column] = pd.array(pr[name][subset], dtype="Float64")
    return table


def write_pr_plots(pr: dict, metrics: dict, plots_dir: Path) -> None:
    """``pr/<subset>.csv`` per subset of :data:`PR_SUBSETS` and ``pr.png`` (model vs pretrained)."""
    folder = Path(plots_dir) / "pr"
    folder.mkdir(parents=True, exist_ok=True)
    for subset in PR_SUBSETS:
        with atomic_path(folder / f"{subset}.csv") as tmp:
            pr_table(pr, subset).to_csv(tmp, index=False)
    fig = Figure(figsize=(11, 6.6))
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    for ax, subset in zip(axes.ravel(), PR_SUBSETS):
        table = pr_table(pr, subset)
        for column, name, style in (("precision", "model", "-"), ("pretrained", "pretrained", "--")):
            if column in table and table[column].notna().any():
                ap = metrics.get(name, {}).get(subset, {}).get("O-mAP_std")
                who = "trained model" if name == "model" else "untrained backbone"
                colour = "#4575b4" if name == "model" else "#888888"
                ax.plot(
                    table["recall"],
                    table[column].astype(float),
                    style,
                    color=colour,
                    marker=".",
                    label=f"{who} (standard AP {_fmt(ap)})",
                )
        label = "all queries" if subset == "all" else f"{subset.removeprefix('size_')} px"
        ax.set_title(f"{label}, {metrics.get('model', {}).get(subset, {}).get('queries', 0)} queries", fontsize=9)
        if table.drop(columns="recall").notna().any().any():
            ax.legend(loc="upper right", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no query", ha="center", va="center", transform=ax.transAxes, color="#888888")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("recall (share of the relevant gallery objects)")
    for ax in axes[:, 0]:
        ax.set_ylabel("interpolated precision")
    fig.suptitle(
        "Object-level precision-recall by query size (sqrt area): mean interpolated precision over queries, "
        f"list of {metrics.get('map_list', '?')} of {metrics.get('gallery', '?')} objects",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, Path(plots_dir) / "pr.png")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_pictures(evaluation: Evaluation, test: ImageTable, plots_dir: Path, crop_size: int) -> None:
    """Every picture of one evaluation into ``plots_dir``: buckets.csv/png, pr/*.csv + pr.png, examples.png."""
    write_bucket_plots(evaluation.metrics, plots_dir)
    write_pr_plots(evaluation.pr, evaluation.metrics, plots_dir)
    names = dict(zip(test.categories["category_id"], test.categories["name"]))
    data = evaluation.data
    write_examples_sheet(
        evaluation.examples,
        data.queries,
        data.gallery,
        test.images,
        names,
        Path(plots_dir) / "examples.png",
        crop_size,
    )


def write_without_ground_truth(plots_dir: Path, message: str) -> None:
    """The pictures of a dataset without ground truth (a photo folder): ``buckets.csv`` and the
    ``pr/<subset>.csv`` curves with their headers only, and PNGs that say why there is nothing to
    draw (DVC declares every one)."""
    plots_dir = Path(plots_dir)
    with atomic_path(plots_dir / "buckets.csv") as tmp:
        pd.DataFrame(columns=["bucket", "queries", *BUCKET_COLUMNS]).to_csv(tmp, index=False)
    for subset in PR_SUBSETS:
        with atomic_path(plots_dir / "pr" / f"{subset}.csv") as tmp:
            pd.DataFrame(columns=["recall", "precision", "pretrained"]).to_csv(tmp, index=False)
    for name in ("buckets.png", "examples.png", "pr.png"):
        fig = Figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10)
        _save(fig, plots_dir / name)
