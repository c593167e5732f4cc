"""LVIS v1 val (stages/data/lvis.py) on a tiny lvis_v1_val.json whose images are COCO files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from dataset_formats import write_jpg

from stages.config import LvisParams
from stages.data import lvis
from stages.tables import DatasetError

CATEGORIES = [
    {
        "id": i + 1,
        "name": n,
        "synset": f"{n}.n.01",
        "synonyms": [n],
        "def": "",
        "frequency": f,
        "image_count": 1,
        "instance_count": 1,
    }
    for i, (n, f) in enumerate(
        [
            ("aerosol_can", "c"),
            ("air_conditioner", "f"),
            ("airplane", "f"),
            ("alarm_clock", "f"),
            ("alcohol", "r"),
            ("zucchini", "c"),
        ]
    )
]
# (id, folder, width, height, boxes)
IMAGES = [
    (397133, "val2017", 64, 48, 3),
    (37777, "val2017", 60, 40, 0),
    (252219, "val2017", 70, 50, 2),
    (9, "train2017", 64, 48, 4),
    (25, "train2017", 50, 40, 1),
]


@pytest.fixture(scope="module")
def lvis_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lvis")
    coco = root / "coco"
    images, anns = [], []
    for iid, folder, w, h, nb in IMAGES:
        fname = f"{iid:012d}.jpg"
        write_jpg(coco / folder / fname, w, h, seed=iid)
        images.append(
            {
                "id": iid,
                "coco_url": f"http://images.cocodataset.org/{folder}/{fname}",
                "width": w,
                "height": h,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
                "license": 1,
            }
        )
        for k in range(nb):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": 1 + (len(anns) % 6),
                    "bbox": [1.0 + k, 2.0, 10.0, 8.0],
                    "area": 80.0,
                    "segmentation": [[1, 2, 11, 2, 11, 10]],
                }
            )
    path = root / "lvis_v1_val.json"
    path.write_text(
        json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": CATEGORIES})
    )
    return path, coco


def _cfg(files, **kw) -> LvisParams:
    path, coco = files
    return LvisParams(annotations=str(path), image_dirs=(str(coco / "val2017"), str(coco / "train2017")), **kw)


def test_val2017_annotated_images_with_lvis_categories(lvis_files):
    out = lvis.build(_cfg(lvis_files))
    assert list(out) == ["test"]
    test = out["test"]
    assert [i["id"] for i in test["images"]] == [252219, 397133]  # val2017, annotated
    assert len(test["annotations"]) == 5
    assert [(c["id"], c["name"]) for c in test["categories"]] == [(c["id"], c["name"]) for c in CATEGORIES]
    _, coco = lvis_files
    for im in test["images"]:
        assert im["file_name"] == str((coco / "val2017" / f"{im['id']:012d}.jpg").resolve())
    assert not any("query" in a for a in test["annotations"])


def test_all_folders_and_unannotated(lvis_files):
    out = lvis.build(_cfg(lvis_files, coco_folders=(), drop_unannotated=False))["test"]
    assert sorted(i["id"] for i in out["images"]) == sorted(i[0] for i in IMAGES)
    assert len(out["annotations"]) == sum(i[4] for i in IMAGES)
    train = next(i for i in out["images"] if i["id"] == 9)
    assert Path(train["file_name"]).parent.name == "train2017"


def test_missing_image_warns_and_missing_file_names_it(lvis_files, tmp_path, caplog):
    path, coco = lvis_files
    only = tmp_path / "val2017"
    only.mkdir()
    os.symlink(coco / "val2017" / "000000397133.jpg", only / "000000397133.jpg")
    with caplog.at_level(logging.WARNING):
        out = lvis.build(LvisParams(annotations=str(path), image_dirs=(str(only),)), 0)["test"]
    assert [i["id"] for i in out["images"]] == [397133]
    assert "1 of 2 images not found and skipped (000000252219.jpg" in caplog.text
    with pytest.raises(DatasetError, match=r"lvis_v1_val\.json not found: expected the path of lvis_v1_val\.json"):
        lvis.build(LvisParams(annotations=str(tmp_path / "lvis_v1_val.json"), image_dirs=(str(only),)), 0)
    with pytest.raises(DatasetError, match=r"data\.lvis\.image_dirs is empty"):
        lvis.build(LvisParams(annotations=str(path)), 0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match=r"bad\.json: malformed LVIS entry \(KeyError: 'width'\)"):
        lvis.build(LvisParams(annotations=str(bad), image_dirs=(str(only),)), 0)
