"""The extract stage on a hand-made dataset: bad images are skipped and counted, not fatal."""

import json

import cv2
import numpy as np
import pytest

from stages import layout
from stages.config import Params
from stages.extract import run
from stages.shards import read_objects


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / layout.dataset_dir("synthetic")
    (root / "img").mkdir(parents=True)
    scene = np.full((96, 128, 3), 200, np.uint8)
    cv2.rectangle(scene, (10, 10), (40, 50), (0, 0, 255), -1)
    cv2.circle(scene, (90, 60), 20, (0, 160, 0), -1)
    cv2.imwrite(str(root / "img/good.png"), scene)
    cv2.imwrite(str(root / "img/flat.png"), np.full((64, 64, 3), 128, np.uint8))
    (root / "img/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    images = [
        {"id": 1, "file_name": "img/good.png", "width": 128, "height": 96},
        {"id": 2, "file_name": "img/flat.png", "width": 64, "height": 64},
        {"id": 3, "file_name": "img/corrupt.jpg", "width": 64, "height": 64},
        {"id": 4, "file_name": "img/missing.png", "width": 64, "height": 64},
    ]
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for split in ("train", "test"):
        (root / f"{split}.json").write_text(json.dumps(coco))
    return tmp_path


def test_bad_images_are_skipped_and_counted(dataset):
    params = Params.model_validate({"extract": {"crop_size": 16, "shard_rows": 7}})
    run(params, "synthetic")
    summary = json.loads((dataset / layout.objects_dir("synthetic") / "summary.json").read_text())
    for split in ("train", "test"):
        s = summary["splits"][split]
        assert s["images"] == 2 and s["skipped_images"] == 2
        assert any(p.endswith("corrupt.jpg") for p in s["skipped"])
        objects = read_objects(layout.objects_dir("synthetic"), split)
        assert len(objects) == s["objects"] > 0
        assert set(objects["image_id"]) <= {1, 2}
        boxes = objects[["x1", "y1", "x2", "y2"]].to_numpy()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
        assert objects["object_id"].is_unique
    train = read_objects(layout.objects_dir("synthetic"), "train", columns=["object_id"])
    test = read_objects(layout.objects_dir("synthetic"), "test", columns=["object_id"])
    assert not set(train["object_id"]) & set(test["object_id"])  # ids unique across splits


def test_worker_processes_give_the_images_of_one_process(scenes):
    """The graph extractor in 2 processes returns, in table order, what this process returns."""
    from stages.extract import build_extractor
    from stages.extract.local import IMAGES_PER_WORKER, local_results

    table = scenes(2 * IMAGES_PER_WORKER + 1, bad=(5,))
    cfg = Params.model_validate({"extract": {"crop_size": 16}}).extract
    extractor = build_extractor(cfg)
    one = list(local_results(table, extractor, cfg, workers=1))
    two = list(local_results(table, extractor, cfg, workers=2))
    assert [r.image_id for r in two] == [r.image_id for r in one] == table["image_id"].tolist()
    assert [r.objects is None for r in two] == [i == 5 for i in range(len(table))]
    for a, b in zip(one, two):
        if a.objects is None:
            continue
        np.testing.assert_array_equal(a.objects["boxes"], b.objects["boxes"])
        assert a.objects["crops"] == b.objects["crops"] and len(a.objects["crops"]) > 0
