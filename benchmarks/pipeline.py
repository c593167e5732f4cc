"""Time each stage of the default pipeline (the commands dvc.yaml runs), print a table.

Writes benchmarks/results/pipeline.json: {"<stage>_s": seconds, ..., "total_s": seconds}.
Run from the project root: `python benchmarks/pipeline.py [--params params.yaml]`.
Stages run in DAG order in the working tree, as `dvc repro --force` runs them, after removing
the resumable state of the default dataset and backbone (extraction manifest, training
checkpoint, embedding cache) so that every stage computes from scratch, as on a fresh clone,
instead of resuming a finished run or reusing its vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stages.config import load_params
from stages.layout import embedding_cache, model_dir, objects_dir

STAGES = ("data", "extract", "splits", "groups", "train", "index", "evaluate", "summary")
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    for state in (objects_dir(params.datasets[0]) / "manifest.json", model_dir(params.backbones[0]) / "checkpoint.pt"):
        state.unlink(missing_ok=True)
    shutil.rmtree(embedding_cache(params.backbones[0], params.datasets[0]), ignore_errors=True)
    timings: dict[str, float] = {}
    for stage in STAGES:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "stages", stage, "--params", args.params],
            check=True,
            stderr=subprocess.DEVNULL if os.environ.get("QUIET") else None,
        )
        timings[f"{stage}_s"] = round(time.perf_counter() - t0, 2)
    total = round(sum(timings.values()), 2)
    print(f"\n{'stage':10s} {'seconds':>9s} {'share':>7s}")
    for stage in STAGES:
        s = timings[f"{stage}_s"]
        print(f"{stage:10s} {s:9.1f} {s / total:7.1%}")
    print(f"{'total':10s} {total:9.1f}")
    result = {**timings, "total_s": total, "cpu_count": os.cpu_count(), "machine": platform.machine()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
