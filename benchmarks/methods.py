"""Compare training methods on the current data: train -> index -> evaluate once per method.

Each method runs in its own scratch folder (``benchmarks/.runs/<method>-s<seed>``) that links to
the pipeline's data (``data/``: run ``dvc repro`` first), so the workspace's models, indexes and
metrics are left alone. Writes ``benchmarks/results/methods.json``: one flat key per
method, seed and headline metric (e.g. ``ms_ugcml_s0_O-R@1``), plus the untrained backbone
(``none``), and prints a Markdown table.

Every pair of runs of the same seed (the untrained backbone included) is compared on the same
queries with a paired bootstrap (stages.metrics.bootstrap.paired_bootstrap, 1,000 resamples,
seeded) of the per-query values the evaluate stage writes (``per_query.parquet``): keys
``<a>_vs_<b>_s<seed>_<metric>_diff`` (a - b, points), ``..._ci95`` ([low, high]) and
``..._separated`` (true when 0 lies outside the interval), and a second table.

    python benchmarks/methods.py                          # none, ntxent, stml, ms_ugcml, seed 0
    python benchmarks/methods.py --methods stml ms_ugcml --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from ruamel.yaml import YAML

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages.metrics.bootstrap import paired_bootstrap  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "methods.json"
HEADLINE = ("O-R@1", "O-mAP", "I-R@1", "I-mAP")
SUBSETS = ("all", "size_0-20")
RESAMPLES = 1000


def paired_comparisons(runs: dict[str, pd.DataFrame], seed: int, metrics=HEADLINE) -> dict:
    """Every pair of ``runs`` of one seed (name -> per-query table with a column per metric, same
    query rows): ``{"<a>_vs_<b>_s<seed>_<metric>_diff": points, ..._ci95: [low, high],
    ..._separated: bool}``, the bootstrap seeded by ``seed``."""
    names = list(runs)
    out: dict = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if not runs[a]["query"].equals(runs[b]["query"]):
                raise ValueError(f"{a} and {b} were not scored on the same queries")
            for metric in metrics:
                got = paired_bootstrap(runs[a][metric] * 100.0, runs[b][metric] * 100.0, RESAMPLES, seed)
                if got is None:
                    continue
                key = f"{a}_vs_{b}_s{seed}_{metric}"
                out[f"{key}_diff"] = round(got["diff"], 4)
                out[f"{key}_ci95"] = [round(got["low"], 4), round(got["high"], 4)]
                out[f"{key}_separated"] = got["separated"]
    return out


def per_query_runs(folder: Path, backbone: str, dataset: str, name: str, baseline: str) -> dict[str, pd.DataFrame]:
    """The trained model's and the untrained backbone's per-query tables of one run folder."""
    table = pd.read_parquet(folder / "metrics" / backbone / dataset / "per_query.parquet")
    runs = {}
    for who, embedding in ((name, "model"), (baseline, "pretrained")):
        columns = {f"{embedding}.{m}": m for m in HEADLINE}
        runs[who] = table[["query", *columns]].rename(columns=columns)
    return runs


def run_method(method: str, seed: int, base: dict, extra: dict, tag: str = "") -> dict:
    folder = ROOT / "benchmarks" / ".runs" / f"{method}{tag}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "data"
    if not link.exists():
        link.symlink_to(ROOT / "data", target_is_directory=True)
    params = json.loads(json.dumps(base))
    params["seed"] = seed
    params["train"]["method"] = method
    for key, value in extra.items():
        params["train"][key] = value
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with open(folder / "params.yaml", "w") as f:
        yaml.dump(params, f)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    for stage in ("train", "index", "evaluate"):
        subprocess.run(
            [sys.executable, "-m", "stages", stage],
            cwd=folder,
            env=env,
            check=True,
            stderr=subprocess.DEVNULL if os.environ.get("QUIET") else None,
        )
    backbone, dataset = params["backbones"][0], params["train_on"]
    metrics = json.loads((folder / "metrics" / backbone / f"{dataset}.json").read_text())
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    metrics["folder"] = folder
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["ntxent", "stml", "ms_ugcml"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--set", nargs="*", default=[], help="extra train.KEY=VALUE overrides (YAML values)")
    ap.add_argument(
        "--tag", default="", help="suffix of the method's keys and folder, e.g. _first with --set embed_head=first"
    )
    args = ap.parse_args()
    base = YAML(typ="safe", pure=True).load(Path(args.params))
    extra = {k: YAML(typ="safe", pure=True).load(v) for k, v in (s.split("=", 1) for s in args.set)}
    result: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows = []
    compared: dict = {}
    pairs: list[tuple[str, int]] = []
    for seed in args.seeds:
        per_query: dict[str, pd.DataFrame] = {}
        for method in args.methods:
            m = run_method(method, seed, base, extra, args.tag)
            backbone, dataset = base["backbones"][0], base["train_on"]
            name = f"{method}{args.tag}"
            runs = per_query_runs(m["folder"], backbone, dataset, name, "none")
            per_query[name] = runs[name]
            per_query.setdefault("none", runs["none"])
            for who, name in ((m["model"], f"{method}{args.tag}_s{seed}"), (m["pretrained"], f"none_s{seed}")):
                for subset in SUBSETS:
                    for key in HEADLINE:
                        suffix = "" if subset == "all" else f"_{subset}"
                        result[f"{name}{suffix}_{key}"] = who[subset][key]
            result[f"{method}{args.tag}_s{seed}_seconds"] = m["seconds"]
            rows.append((f"{method}{args.tag} (seed {seed})", m["model"]["all"]))
        rows.append((f"none (seed {seed})", m["pretrained"]["all"]))
        compared |= paired_comparisons(per_query, seed)
        names = list(per_query)
        pairs += [(f"{a}_vs_{b}", seed) for i, a in enumerate(names) for b in names[i + 1 :]]
    result["queries"] = m["model"]["all"]["queries"]
    result["gallery"] = m["gallery"]
    result |= compared
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(sorted(result.items())), indent=2) + "\n")
    print("| method | " + " | ".join(HEADLINE) + " |")
    print("|---|" + "---|" * len(HEADLINE))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{values[k]:.2f}" for k in HEADLINE) + " |")
    print("\n| pair (a - b, paired 95% bootstrap) | " + " | ".join(HEADLINE) + " |")
    print("|---|" + "---|" * len(HEADLINE))
    for a_b, seed in pairs:
        cells = []
        for metric in HEADLINE:
            key = f"{a_b}_s{seed}_{metric}"
            if f"{key}_diff" in compared:
                low, high = compared[f"{key}_ci95"]
                mark = " **outside**" if compared[f"{key}_separated"] else ""
                cells.append(f"{compared[f'{key}_diff']:+.2f} [{low:+.2f}, {high:+.2f}]{mark}")
            else:
                cells.append("-")
        print(f"| {a_b} (seed {seed}) | " + " | ".join(cells) + " |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
