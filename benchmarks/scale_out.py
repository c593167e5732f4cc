"""Scale-out of extraction on Ray: 2 workers vs 1 worker vs the local engine (graph extractor).

Same images (scikit-image's real photos, 6 crops/flips each, 256 px longest side) through the
stage's extraction (``extract_dataset``: shards and manifest written) with
- the Ray engine on a local cluster of 2 CPUs with 2 extractor actors, then with 1 actor;
- the local engine (one process, background decoding).
Throughput = images / time from the first extractor call (on any worker) to the last image
received by the driver, so the cluster start-up (`ray_startup_s`, reported apart) and the
actors' start-up (`ray_actor_startup_s`: time to the first extractor call; it includes one warm-up
call per worker, which imports torchvision for the box NMS) are excluded.
`ray_scaling_2workers` = throughput 2 workers / 1 worker (target
>= 1.6 on 2 cores); `ray_over_local` = Ray 2 workers / local engine (target >= 1.0).

Merges its keys into benchmarks/results/scale_out.json (other keys of that file are kept).
Run: `python benchmarks/scale_out.py` (needs the [ray] extra).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import skimage.data  # noqa: E402

from stages.config import ExtractParams  # noqa: E402
from stages.extract import build_extractor  # noqa: E402
from stages.extract.extraction import extract_dataset  # noqa: E402
from stages.extract.local import local_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale_out.json"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat")
SIDE = 256
CFG = ExtractParams(crop_size=64, shard_rows=2000)
ROUNDS = 3


def write_photos(folder: Path) -> pd.DataFrame:
    paths = []
    for name in PHOTOS:
        photo = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        h, w = photo.shape[:2]
        for v in range(6):
            crop = photo[v * h // 24 : h - (5 - v) * h // 24, (5 - v) * w // 24 : w - v * w // 24]
            crop = crop[:, ::-1] if v % 2 else crop
            s = SIDE / max(crop.shape[:2])
            crop = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)
            path = folder / f"{name}_{v}.png"
            cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            paths.append(str(path))
    return pd.DataFrame({"image_id": np.arange(len(paths)), "path": paths})


class StampedExtractor:
    """The extractor, appending the wall-clock start of each call to a file of its process."""

    def __init__(self, stamps: str):
        self.inner = build_extractor(CFG)
        # the first call imports torchvision (box NMS): part of the worker's start-up, not of throughput
        self.inner.propose(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        self.name = self.inner.name
        self.file = Path(stamps) / f"{os.getpid()}.txt"

    def propose(self, image):
        with open(self.file, "a") as f:
            f.write(f"{time.time()}\n")
        return self.inner.propose(image)


def throughput(make_engine, images: pd.DataFrame, out: Path) -> tuple[float, float]:
    """(images/s from the first extractor call, on any worker, to the last image received; seconds
    from the start to that first call, i.e. the workers' start-up)."""
    shutil.rmtree(out, ignore_errors=True)
    stamps = out.with_name(out.name + "_stamps")
    shutil.rmtree(stamps, ignore_errors=True)
    stamps.mkdir(parents=True)
    engine = make_engine(functools.partial(StampedExtractor, str(stamps)))
    last = {}

    def timed(todo):
        for result in engine(todo):
            last["t"] = time.time()
            yield result

    start = time.time()
    extract_dataset({"train": images}, out, timed, "graph", CFG, "bench")
    first = min(float(line) for f in stamps.glob("*.txt") for line in f.read_text().split())
    return len(images) / (last["t"] - first), first - start


def main() -> None:
    import ray

    from stages.extract.ray_engine import ray_results

    work = Path(tempfile.mkdtemp(prefix="scale_out_"))
    try:
        images = write_photos(work)
        local_tp, _ = throughput(
            lambda factory: functools.partial(local_results, extractor=factory(), cfg=CFG), images, work / "local"
        )
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        try:

            def on_ray(workers):
                return lambda factory: functools.partial(ray_results, factory=factory, cfg=CFG, workers=workers)

            # interleaved rounds (1, 2, 2, 1 workers, ...) so that drifting machine load hits both alike
            runs: dict = {1: [], 2: []}
            for r in range(ROUNDS):
                for workers in (1, 2) if r % 2 == 0 else (2, 1):
                    runs[workers].append(throughput(on_ray(workers), images, work / f"r{workers}"))
            local_tp = float(
                np.median(
                    [local_tp]
                    + [
                        throughput(
                            lambda f: functools.partial(local_results, extractor=f(), cfg=CFG), images, work / "local"
                        )[0]
                        for _ in range(ROUNDS - 1)
                    ]
                )
            )
            ray1 = float(np.median([tp for tp, _ in runs[1]]))
            ray2 = float(np.median([tp for tp, _ in runs[2]]))
            actor_start = float(np.median([s for _, s in runs[1] + runs[2]]))
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(
        {
            "ray_scaling_2workers": round(ray2 / ray1, 3),
            "ray_over_local": round(ray2 / local_tp, 3),
            "ray_startup_s": round(startup, 2),
            "ray_actor_startup_s": round(actor_start, 2),
            "extract_images": len(images),
            "extract_cpus": os.cpu_count(),
            "extract_rounds": ROUNDS,
            "extract_load_avg_1min": round(os.getloadavg()[0], 1),  # machine shared with other jobs
        }
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    print(json.dumps(results, indent=2))
    print(f"images/s: local {local_tp:.2f}, ray 1 worker {ray1:.2f}, ray 2 workers {ray2:.2f}")


if __name__ == "__main__":
    main()
