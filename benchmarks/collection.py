"""How fast DVC checks a big photo folder: `dvc status` and a no-op `dvc repro` at 100,000 files.

Generates N distinct tiny PNGs under --root (outside the repository; reused when already there),
builds a scratch git + DVC repository with this project's dvc.yaml, `stages/` and an `images`
dataset over the folder, runs `dvc repro data@images` once, then times with the real dvc CLI:

* ``status_s_100k``: ``dvc status data@images`` (the scan stage is ``always_changed``; the data
  stage's dependency is the scan's one listing file, not the folder);
* ``repro_noop_s_100k``: ``dvc repro data@images`` with nothing changed (the scan runs, its
  listing is unchanged, so the data stage and everything after it is skipped);
* that an added file and a modified file are detected (the data stage reruns);
* ``baseline_dir_dep_status_s_100k``: the same folder as a plain DVC directory dependency
  (DVC stats every file and looks each up in its state database), for comparison;
  ``baseline_first_hash_s_100k``: DVC hashing the folder the first time.

Writes benchmarks/results/collection.json.  Usage: python benchmarks/collection.py [--files N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "collection.json"


def generate(root: Path, n: int) -> None:
    """N distinct 8x8 PNGs, 1,000 per folder (kept between runs: a marker file records N)."""
    marker = root / ".generated"
    if marker.exists() and marker.read_text() == str(n):
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        ok, buf = cv2.imencode(".png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        (folder / f"{i:06d}.png").write_bytes(buf.tobytes())
    marker.write_text(str(n))


def sh(cwd: Path, *args: str) -> tuple[float, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return took, res.stdout + res.stderr


def best_of(cwd: Path, runs: int, *args: str) -> tuple[float, str]:
    results = [sh(cwd, *args) for _ in range(runs)]
    return min(r[0] for r in results), results[-1][1]


def scratch_repo(base: Path, photos: Path) -> Path:
    repo = base / "repo"
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "sources", repo / "data" / "sources")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    yaml = YAML(typ="safe", pure=True)
    params = yaml.load(ROOT / "params.yaml")
    params.update(datasets=["images"], train_on="images", watch=["images"])
    params["data"]["images"]["paths"] = [str(photos)]
    with open(repo / "params.yaml", "w") as f:
        yaml.dump(params, f)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        sh(repo, *cmd)
    sh(repo, "git", "-c", "user.email=b@example.invalid", "-c", "user.name=bench", "commit", "-qm", "bench")
    return repo


def baseline(base: Path, photos: Path, runs: int) -> dict:
    """The folder as a plain DVC directory dependency."""
    repo = base / "baseline"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(
        f"stages:\n  count:\n    cmd: ls -R {photos} | wc -l > count.txt\n    deps:\n      - {photos}\n"
        "    outs:\n      - count.txt\n"
    )
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    first, _ = sh(repo, "dvc", "repro", "-q")
    status, out = best_of(repo, runs, "dvc", "status")
    assert "up to date" in out, out
    return {"baseline_first_hash_s_100k": round(first, 2), "baseline_dir_dep_status_s_100k": round(status, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "ms-ugcml-collection")
    ap.add_argument("--runs", type=int, default=3, help="timed repeats (the best is kept)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain directory dependency")
    args = ap.parse_args()
    photos = args.root / "photos"
    t0 = time.perf_counter()
    generate(photos, args.files)
    print(f"{args.files} files in {photos} ({time.perf_counter() - t0:.0f} s)")
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        base = Path(tmp)
        repo = scratch_repo(base, photos)
        first, _ = sh(repo, "dvc", "repro", "data@images")
        listing = repo / "data" / "sources" / "images.json"
        scan_s, _ = best_of(repo, args.runs, sys.executable, "-m", "stages", "scan", "-d", "images")
        status, out = best_of(repo, args.runs, "dvc", "status", "data@images")
        assert "data@images" not in out.replace("scan@images", ""), out  # only the always-changed scan
        noop, out = best_of(repo, args.runs, "dvc", "repro", "data@images")
        assert "Running stage 'data@images'" not in out, out
        (photos / "000" / "added.png").write_bytes((photos / "000" / "000000.png").read_bytes()[:-1] + b"\x00")
        try:
            added_s, out = sh(repo, "dvc", "repro", "data@images")
            added = "Running stage 'data@images'" in out
            time.sleep(0.01)
            victim = photos / "000" / "000001.png"
            victim.write_bytes(victim.read_bytes())  # same bytes, new mtime: a modified file
            _, out = sh(repo, "dvc", "repro", "data@images")
            modified = "Running stage 'data@images'" in out
        finally:
            (photos / "000" / "added.png").unlink()
        result = {
            "files": args.files,
            "status_s_100k": round(status, 2),
            "repro_noop_s_100k": round(noop, 2),
            "scan_command_s": round(scan_s, 2),
            "listing_mb": round(listing.stat().st_size / 1e6, 2),
            "first_repro_data_s": round(first, 1),
            "repro_after_added_file_s": round(added_s, 1),
            "added_file_detected": added,
            "modified_file_detected": modified,
            "runs": args.runs,
            "cpu_cores": os.cpu_count(),
        }
        if not args.no_baseline:
            result.update(baseline(base, photos, args.runs))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
