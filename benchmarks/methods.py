"""Compare training methods on the current data: train -> index -> evaluate once per method.

Each method runs in its own scratch folder (``benchmarks/.runs/<method>-s<seed>``) that links to
the pipeline's data (``data/``: run ``dvc repro`` first), so the workspace's models, indexes and
metrics are left alone. Writes ``benchmarks/results/methods.json``: one flat key per
method, seed and headline metric (e.g. ``ms_ugcml_s0_O-R@1``), plus the untrained backbone
(``none``), and prints a Markdown table.

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

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "methods.json"
HEADLINE = ("O-R@1", "O-mAP", "I-R@1", "I-mAP")
SUBSETS = ("all", "size_0-20")


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
    for seed in args.seeds:
        for method in args.methods:
            m = run_method(method, seed, base, extra, args.tag)
            for who, name in ((m["model"], f"{method}{args.tag}_s{seed}"), (m["pretrained"], f"none_s{seed}")):
                for subset in SUBSETS:
                    for key in HEADLINE:
                        suffix = "" if subset == "all" else f"_{subset}"
                        result[f"{name}{suffix}_{key}"] = who[subset][key]
            result[f"{method}{args.tag}_s{seed}_seconds"] = m["seconds"]
            rows.append((f"{method}{args.tag} (seed {seed})", m["model"]["all"]))
        rows.append((f"none (seed {seed})", m["pretrained"]["all"]))
    result["queries"] = m["model"]["all"]["queries"]
    result["gallery"] = m["gallery"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(sorted(result.items())), indent=2) + "\n")
    print("| method | " + " | ".join(HEADLINE) + " |")
    print("|---|" + "---|" * len(HEADLINE))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{values[k]:.2f}" for k in HEADLINE) + " |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
