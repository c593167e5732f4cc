"""SAM extraction through the stage against segment-anything's own generator loop.

Same images (real photos shipped with scikit-image, 320 px), same tiny random SAM (the test
model of tests/extract/tiny_sam.py, thresholds lowered so that masks come out), same settings.
Reference: for each image, decode it (cv2) and call ``SamAutomaticMaskGenerator.generate``.
Stage: ``stages.extract.extract_tables`` (background decoding, generator, crops, Parquet shards,
resume manifest).  `cpu_ratio` = stage time per image / reference time per image (target <= 1.10);
the two are interleaved, medians of REPEATS runs.  `gpu_speedup` needs a GPU machine (null here).

Writes benchmarks/results/sam_extract.json. Run: `python benchmarks/sam_extract.py`.
"""

from __future__ import annotations

import json
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
import torch  # noqa: E402
from segment_anything import SamAutomaticMaskGenerator  # noqa: E402

from stages.config import ExtractParams  # noqa: E402
from stages.extract import extract_tables  # noqa: E402
from stages.extract.sam import SamExtractor  # noqa: E402
from tests.extract.tiny_sam import TINY_BUILDERS, TINY_PARAMS, save_tiny_checkpoint  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sam_extract.json"
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
SIDE = 320
REPEATS = 5
POINTS_PER_SIDE = 16


def write_photos(folder: Path) -> pd.DataFrame:
    paths = []
    for name in PHOTOS:
        img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        img = np.ascontiguousarray(img[..., :3])
        s = SIDE / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        path = folder / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(str(path))
    return pd.DataFrame({"image_id": np.arange(len(paths)), "path": paths})


def main() -> None:
    torch.set_num_threads(1)  # 2 shared cores: both sides alike, no oversubscription
    work = Path(tempfile.mkdtemp(prefix="sam_bench_"))
    try:
        images = write_photos(work)
        checkpoint = save_tiny_checkpoint(work / "tiny.pth")
        cfg = ExtractParams(
            extractor="sam", sam={"checkpoint": checkpoint, **TINY_PARAMS, "points_per_side": POINTS_PER_SIDE}
        )
        extractor = SamExtractor(cfg.sam, builders=TINY_BUILDERS)
        generator = SamAutomaticMaskGenerator(
            extractor.generator.predictor.model,
            points_per_side=cfg.sam.points_per_side,
            points_per_batch=cfg.sam.points_per_batch,
            pred_iou_thresh=cfg.sam.pred_iou_thresh,
            stability_score_thresh=cfg.sam.stability_score_thresh,
            box_nms_thresh=cfg.sam.box_nms_thresh,
        )

        def reference() -> int:
            n = 0
            for path in images["path"]:
                image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
                n += len(generator.generate(image))
            return n

        def stage() -> int:
            out = work / "objects"
            shutil.rmtree(out, ignore_errors=True)
            return extract_tables({"train": images}, out, extractor, cfg, "bench")["splits"]["train"]["objects"]

        n_ref, n_stage = reference(), stage()  # warm-up
        ref_t, stage_t = [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            reference()
            ref_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stage()
            stage_t.append(time.perf_counter() - t0)
        n = len(images)
        result = {
            "cpu_ratio": round(float(np.median(stage_t) / np.median(ref_t)), 3),
            "gpu_speedup": None,  # no GPU machine was lent to this session
            "images": n,
            "image_side": SIDE,
            "points_per_side": POINTS_PER_SIDE,
            "objects_per_image_stage": round(n_stage / n, 1),
            "objects_per_image_reference": round(n_ref / n, 1),
            "torch_threads": 1,
            "model": "tiny random SAM (tests/extract/tiny_sam.py): ViT width 32, depth 1, 64 px input",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
