"""The universal-embedding summary as data (mean over datasets) and as a table picture."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from stages.atomic import save_figure

# R@1 and mMP@5 at both levels (UnED's relevance, "same class", is closest to our image level)
SUMMARY_KEYS = ("O-R@1", "O-mMP@5", "I-R@1", "I-mMP@5")
EMBEDDINGS = ("model", "pretrained")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    # UnED (seed 003): the overall score is the unweighted mean of the per-domain values
    return round(sum(values) / len(values), 4) if values else None


def summarize_datasets(backbone: str, per_dataset: dict[str, dict]) -> dict:
    """``{"backbone", "datasets", "<embedding>": {"mean": {key: v}, "<dataset>": {key: v, "queries": n}}}``.

    ``per_dataset`` maps a dataset to its metrics JSON; values are the ``all`` subset's; the mean
    is over the datasets that have a value (None when none has). A dataset without ground truth (a
    photo folder: its metrics say ``"ground_truth": false``) is listed apart and not averaged.
    """
    scored = {name: m for name, m in per_dataset.items() if m.get("ground_truth", True)}
    out: dict = {"backbone": backbone, "datasets": list(scored)}
    out["without_ground_truth"] = [name for name in per_dataset if name not in scored]  # photo folders: no score
    per_dataset = scored
    for embedding in EMBEDDINGS:
        rows = {
            name: {"queries": m[embedding]["all"]["queries"], **{k: m[embedding]["all"].get(k) for k in SUMMARY_KEYS}}
            for name, m in per_dataset.items()
            if embedding in m
        }
        out[embedding] = {"mean": {k: _mean([r[k] for r in rows.values()]) for k in SUMMARY_KEYS}, **rows}
    return out


def write_table(summary: dict, path: Path) -> None:
    """A table picture: one row per dataset and the mean, the trained model's and the untrained backbone's values."""
    datasets = summary["datasets"]
    header = ["dataset", "queries", *(f"{k}\nmodel" for k in SUMMARY_KEYS), *(f"{k}\nuntrained" for k in SUMMARY_KEYS)]
    body = []
    for name in [*datasets, "mean"]:
        row = [name if name != "mean" else f"mean of {len(datasets)}"]
        row.append(str(summary["model"][name]["queries"]) if name != "mean" else "")
        for embedding in EMBEDDINGS:
            entry = summary.get(embedding, {}).get(name, {})
            row += ["-" if entry.get(k) is None else f"{entry[k]:.2f}" for k in SUMMARY_KEYS]
        body.append(row)
    fig = Figure(figsize=(12, 1.3 + 0.38 * len(body)))
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=body, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 2.0)
    for (r, _c), cell in table.get_celld().items():
        if r == 0:
            cell.set_facecolor("#dde6f3")
        elif r == len(body):
            cell.set_text_props(fontweight="bold")
    ax.set_title(
        f"{summary['backbone']}: R@1 and mMP@5 (percent) per evaluated dataset and their unweighted mean",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
