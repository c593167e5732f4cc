"""Compare training methods and ablations on the current data: train -> index -> evaluate per config.

Each config runs in its own scratch folder (``benchmarks/.runs/<config>-s<seed>``) that links to
the pipeline's data (``data/``: run ``dvc repro`` first), so the workspace's models, indexes and
metrics are left alone; the folders share one embedding cache (``benchmarks/.runs/.cache``), so
the untrained backbone's gallery vectors are computed once, the same for every config.
Writes ``benchmarks/results/methods.json``: one flat key per config, seed and metric
(``<config>_s<seed>_<metric>``, e.g. ``ms_ugcml_s0_O-R@1``; the small-object bucket as
``<config>_s<seed>_size_0-20_<metric>``), plus the untrained backbone (``none``), and prints a
Markdown table of the mean and min-max over the seeds.

Configs (``--configs``): ntxent, stml, stml_perhead (STML with the per-head batch of ms_ugcml at 4
groups: 8 queries / 4 heads = 2 queries), ms_ugcml (4 groups, the default), ms_ugcml_g1/_g2/_g8,
ms_ugcml_nockd (CKD weight 0), ms_ugcml_q32 (32 queries: each of the 4 heads learns from about
as many crops as stml's one head; the converse of stml_perhead, at ~4x the step cost). Every
ms_ugcml config's own key is its model embedded with the mean of the heads (whatever params.yaml's
``train.embed_head``), and the model is also embedded with its first head (``<config>_first``) and routed
(``<config>_routed``: each gallery object and query through the head of its own scale group, by
box area) without retraining: the train stage resumes the finished run.

Every pair of runs of the same seed (the untrained backbone included) is compared on the same
queries with a paired bootstrap (stages.metrics.bootstrap.paired_bootstrap, 1,000 resamples,
seeded) of the per-query values the evaluate stage writes (``per_query.parquet``): keys
``<a>_vs_<b>_s<seed>_<metric>_diff`` (a - b, points), ``..._ci95`` ([low, high]) and
``..._separated`` (true when 0 lies outside the interval), and a second table.

    python benchmarks/methods.py                                     # the default configs, seed 0
    python benchmarks/methods.py --configs stml ms_ugcml --seeds 0 1 2
    python benchmarks/methods.py --configs stml ms_ugcml --steps 600 --queries 16 --tag _long
    python benchmarks/methods.py --report stml_m2 ms_ugcml_first_m2 --seeds 0 1 2   # tables only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stages.metrics.bootstrap import paired_bootstrap  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "methods.json"
SHARED_CACHE = ROOT / "benchmarks" / ".runs" / ".cache"
HEADLINE = ("O-R@1", "O-mAP", "O-mAP_std", "I-R@1", "I-mAP")
SUBSETS = ("all", "size_0-20")
PAIRED = ("O-R@1", "O-mAP", "I-R@1", "I-mAP")  # the per-query values the evaluate stage writes
RESAMPLES = 1000
# the printed tables' columns (subset, metric): the README's; methods.json records every HEADLINE
COLUMNS = (
    ("all", "O-R@1"),
    ("all", "O-mAP"),
    ("all", "I-R@1"),
    ("all", "I-mAP"),
    ("size_0-20", "O-R@1"),
    ("size_0-20", "O-mAP_std"),
)
# every config's own key embeds with the mean of the heads (so that keys keep one meaning whatever
# params.yaml's train.embed_head); the other retrieval heads of a trained ms_ugcml model, no retraining
BASE_HEAD = "mean"
RETRIEVAL_HEADS = ("first", "routed")
# config -> (train.* overrides, top-level overrides)
CONFIGS: dict[str, tuple[dict, dict]] = {
    "ntxent": ({"method": "ntxent"}, {}),
    "stml": ({"method": "stml"}, {}),
    "stml_perhead": ({"method": "stml", "queries": 2}, {}),
    "ms_ugcml": ({"method": "ms_ugcml"}, {"groups": 4}),
    "ms_ugcml_g1": ({"method": "ms_ugcml"}, {"groups": 1}),
    "ms_ugcml_g2": ({"method": "ms_ugcml"}, {"groups": 2}),
    "ms_ugcml_g8": ({"method": "ms_ugcml"}, {"groups": 8}),
    "ms_ugcml_nockd": ({"method": "ms_ugcml", "ckd_weight": 0.0}, {"groups": 4}),
    "ms_ugcml_q32": ({"method": "ms_ugcml", "queries": 32}, {"groups": 4}),
}


def _link_data(folder: Path, own_groups: bool) -> None:
    """``folder/data/*`` links to the pipeline's data; with ``own_groups`` the scale groups are the
    folder's own (its groups stage writes there, never into the pipeline's data/groups)."""
    data = folder / "data"
    if data.is_symlink():  # the older layout linked the whole folder
        data.unlink()
    data.mkdir(parents=True, exist_ok=True)
    cache = folder / ".cache"  # one embedding cache for all runs: the untrained backbone is embedded once
    if not cache.is_symlink():
        SHARED_CACHE.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(SHARED_CACHE, target_is_directory=True)
    for child in (ROOT / "data").iterdir():
        link = data / child.name
        if child.name == "groups" and own_groups:
            if link.is_symlink():
                link.unlink()
            continue
        if not link.exists() and not link.is_symlink():
            link.symlink_to(child, target_is_directory=child.is_dir())


def _write_params(folder: Path, params: dict) -> None:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with open(folder / "params.yaml", "w") as f:
        yaml.dump(params, f)


def _stages(folder: Path, stages: tuple[str, ...]) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for stage in stages:
        subprocess.run(
            [sys.executable, "-m", "stages", stage],
            cwd=folder,
            env=env,
            check=True,
            stderr=subprocess.DEVNULL if os.environ.get("QUIET") else None,
        )


def run_config(
    name: str, seed: int, base: dict, extra: dict, tag: str = "", heads: tuple[str, ...] = RETRIEVAL_HEADS
) -> dict[str, dict]:
    """Metrics of one config (and of its first head, for ms_ugcml) in a scratch folder."""
    train, top = CONFIGS[name]
    folder = ROOT / "benchmarks" / ".runs" / f"{name}{tag}-s{seed}"
    params = json.loads(json.dumps(base)) | top | {"seed": seed}
    params["train"] = params["train"] | {"embed_head": BASE_HEAD} | train | extra
    needs_groups = params["groups"] != base["groups"]
    _link_data(folder, own_groups=needs_groups)
    _write_params(folder, params)
    backbone, dataset = params["backbones"][0], params["train_on"]
    resumed = (folder / "models" / backbone / "checkpoint.pt").exists()  # a rerun would time only the rest
    t0 = time.perf_counter()
    _stages(folder, (("groups",) if needs_groups else ()) + ("train", "index", "evaluate"))
    metrics_file = folder / "metrics" / backbone / f"{dataset}.json"
    out = {f"{name}{tag}": json.loads(metrics_file.read_text())}
    if not resumed:  # a resumed run's time is not the run's time: the recorded one stays
        out[f"{name}{tag}"]["seconds"] = round(time.perf_counter() - t0, 1)
    out[f"{name}{tag}"]["runs"] = per_query_runs(folder, backbone, dataset, f"{name}{tag}", "none")
    if params["train"]["method"] == "ms_ugcml" and params["groups"] > 1:  # the same model, other heads
        for head in heads:
            params["train"]["embed_head"] = head
            _write_params(folder, params)
            _stages(folder, ("train", "index", "evaluate"))  # train resumes the finished run
            key = f"{name}_{head}{tag}"
            out[key] = json.loads(metrics_file.read_text())
            out[key]["runs"] = per_query_runs(folder, backbone, dataset, key, "none")
    return out


def paired_comparisons(runs: dict[str, pd.DataFrame], seed: int, metrics=PAIRED) -> dict:
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
        columns = {f"{embedding}.{m}": m for m in PAIRED}
        runs[who] = table[["query", *columns]].rename(columns=columns)
    return runs


def recorded_seeds(result: dict, name: str, seeds: list[int]) -> list[int]:
    """The ``seeds`` that ``result`` (methods.json's keys) holds a run of ``name`` for."""
    return [s for s in seeds if f"{name}_s{s}_{HEADLINE[0]}" in result]


def summary_rows(result: dict, names: list[str], seeds: list[int]) -> list[str]:
    """One Markdown row per name: the seeds it ran, then mean (min-max) over them of each COLUMNS."""
    rows = []
    for name in names:
        ran = recorded_seeds(result, name, seeds)
        cells = [",".join(map(str, ran)) or "—"]
        for subset, key in COLUMNS:
            suffix = "" if subset == "all" else f"_{subset}"
            values = [result[f"{name}_s{s}{suffix}_{key}"] for s in ran if f"{name}_s{s}{suffix}_{key}" in result]
            if not values:
                cells.append("—")
                continue
            mean = float(np.mean(values))
            cells.append(f"{mean:.2f}" + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def print_tables(result: dict, names: list[str], seeds: list[int], pairs: list[tuple[str, int]]) -> None:
    """The Markdown tables of ``result`` (methods.json's keys): mean (min-max) over ``seeds`` per
    config, the untrained backbone first, then each recorded paired comparison of ``pairs``."""
    head = [key if subset == "all" else f"small {key}" for subset, key in COLUMNS]
    print("| config | seeds | " + " | ".join(head) + " |")
    print("|---|---|" + "---|" * len(head))
    for row in summary_rows(result, ["none", *[n for n in names if n != "none"]], seeds):
        print(row)
    print("\n| pair (a - b, paired 95% bootstrap) | " + " | ".join(PAIRED) + " |")
    print("|---|" + "---|" * len(PAIRED))
    for a_b, seed in pairs:
        cells = []
        for metric in PAIRED:
            key = f"{a_b}_s{seed}_{metric}"
            if f"{key}_diff" in result:
                low, high = result[f"{key}_ci95"]
                mark = " **outside**" if result[f"{key}_separated"] else ""
                cells.append(f"{result[f'{key}_diff']:+.2f} [{low:+.2f}, {high:+.2f}]{mark}")
            else:
                cells.append("-")
        print(f"| {a_b} (seed {seed}) | " + " | ".join(cells) + " |")


def recorded_pairs(result: dict, names: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The paired comparisons methods.json holds between two of ``names``, per seed (a - b in the
    order they were recorded)."""
    out = []
    for seed in seeds:
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for x, y in ((a, b), (b, a)):
                    if f"{x}_vs_{y}_s{seed}_{PAIRED[0]}_diff" in result:
                        out.append((f"{x}_vs_{y}", seed))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["ntxent", "stml", "ms_ugcml"], choices=sorted(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=None, help="train.steps of every config (default: params.yaml)")
    ap.add_argument("--queries", type=int, default=None, help="train.queries of every config (default: params.yaml)")
    ap.add_argument("--set", nargs="*", default=[], help="extra train.KEY=VALUE overrides (YAML values)")
    ap.add_argument("--tag", default="", help="suffix of the keys and folders of this run, e.g. _long")
    ap.add_argument(
        "--heads",
        nargs="*",
        default=list(RETRIEVAL_HEADS),
        choices=RETRIEVAL_HEADS,
        help="retrieval heads of each ms_ugcml model besides the mean (default: all; none: --heads)",
    )
    ap.add_argument(
        "--report",
        nargs="+",
        metavar="NAME",
        help="train nothing: print the tables of these recorded names (e.g. stml_m2 ms_ugcml_first_m2) over "
        "--seeds from methods.json, with the paired comparisons it holds between them",
    )
    args = ap.parse_args()
    if args.report:
        recorded = json.loads(RESULTS.read_text())
        missing = [n for n in args.report if not recorded_seeds(recorded, n, args.seeds)]
        if missing:
            sys.exit(f"methods.json holds no seed {args.seeds} of: {', '.join(missing)}")
        print_tables(recorded, args.report, args.seeds, recorded_pairs(recorded, ["none", *args.report], args.seeds))
        return
    base = YAML(typ="safe", pure=True).load(Path(args.params))
    extra = {k: YAML(typ="safe", pure=True).load(v) for k, v in (s.split("=", 1) for s in args.set)}
    extra |= {k: v for k, v in (("steps", args.steps), ("queries", args.queries)) if v is not None}
    result: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    names: list[str] = []
    compared: dict = {}
    pairs: list[tuple[str, int]] = []
    for seed in args.seeds:
        per_query: dict[str, pd.DataFrame] = {}
        for config in args.configs:
            for name, m in run_config(config, seed, base, extra, args.tag, tuple(args.heads)).items():
                runs = m.pop("runs")
                per_query[name] = runs[name]
                per_query.setdefault("none", runs["none"])
                for who, key_name in ((m["model"], f"{name}_s{seed}"), (m["pretrained"], f"none_s{seed}")):
                    for subset in SUBSETS:
                        for key in HEADLINE:
                            suffix = "" if subset == "all" else f"_{subset}"
                            result[f"{key_name}{suffix}_{key}"] = who[subset][key]
                if "seconds" in m:
                    result[f"{name}_s{seed}_seconds"] = m["seconds"]
                names += [name] if name not in names else []
                result["queries"], result["gallery"] = m["model"]["all"]["queries"], m["gallery"]
        compared |= paired_comparisons(per_query, seed)
        listed = list(per_query)
        pairs += [(f"{a}_vs_{b}", seed) for i, a in enumerate(listed) for b in listed[i + 1 :]]
    result |= compared
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(sorted(result.items())), indent=2) + "\n")
    print_tables(result, names, args.seeds, pairs)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
