"""The COCO+VOC benchmark source (stages/data/coco_voc.py) on tiny COCO/VOC folders in the real formats."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from dataset_formats import COCO_CATEGORIES, write_coco, write_voc

from stages.config import CocoVocParams
from stages.data import coco_voc
from stages.data.coco_voc import VOC_ID_OFFSET, voc_category_ids, voc_image_id
from stages.data.voc_xml import VOC_CLASSES, VOC_TO_COCO_NAME
from stages.splits.tasks import COCO_ORE_TASKS, task_of_categories
from stages.tables import DatasetError

TRAIN_IDS = list(range(1, 31))  # 30 COCO train images
TRAIN_BOXES = [0 if i % 10 == 0 else 1 + i % 3 for i in range(30)]  # 3 unannotated
TEST_IDS = [139, 285, 632, 724, 776, 785, 802, 872]
TEST_BOXES = [2, 0, 3, 1, 0, 2, 1, 4]  # 2 unannotated
VOC_SETS = {"trainval": [5, 7, 9, 12, 14, 16, 17, 19], "val": [7, 12, 19], "test": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("coco_voc")
    coco, voc = base / "coco", base / "VOCdevkit" / "VOC2007"
    train = write_coco(coco, "train2017", TRAIN_IDS, TRAIN_BOXES, crowd={3}, seed=0)
    test = write_coco(coco, "val2017", TEST_IDS, TEST_BOXES, crowd={100_001}, seed=1)
    written = write_voc(voc, VOC_SETS)
    return coco, voc, {"train": train, "test": test, "voc": written}


def _cfg(roots, **kw) -> CocoVocParams:
    coco, voc, _ = roots
    return CocoVocParams(coco_root=str(coco), voc_root=str(voc), **{"val_images": 5, **kw})


@pytest.fixture(scope="module")
def built(roots) -> dict:
    return coco_voc.build(_cfg(roots), seed=0, progress=False)


def _n_voc_objects(written, names) -> int:
    return sum(len(written[f"{n:06d}"][2]) for n in names)


def test_split_sizes_match_the_sources(roots, built):
    _, _, src = roots
    assert set(built) == {"train", "val", "test"}
    n_voc_train = len(VOC_SETS["trainval"])  # val is inside trainval: counted once
    assert len(built["train"]["images"]) + len(built["val"]["images"]) == 30 + n_voc_train
    assert len(built["val"]["images"]) == 5
    # test: COCO val minus its 2 unannotated images + every VOC test image
    assert len(built["test"]["images"]) == 6 + 4
    n_test_boxes = len(src["test"]["annotations"]) + _n_voc_objects(src["voc"], VOC_SETS["test"])
    assert len(built["test"]["annotations"]) == n_test_boxes == 13 + _n_voc_objects(src["voc"], [1, 2, 3, 4])
    n_train_boxes = len(src["train"]["annotations"]) + _n_voc_objects(src["voc"], VOC_SETS["trainval"])
    assert len(built["train"]["annotations"]) + len(built["val"]["annotations"]) == n_train_boxes
    # every box is a query by default (crowd and difficult included, the paper's count)
    assert not any("query" in a for s in built.values() for a in s["annotations"])


def test_categories_are_coco_80_and_ore_order_resolves(built):
    for split in built.values():
        assert [(c["id"], c["name"]) for c in split["categories"]] == COCO_CATEGORIES
    names = [c["name"] for c in built["train"]["categories"]]
    ore = [n for task in COCO_ORE_TASKS for n in task]
    assert len(ore) == 80 and set(ore) == set(names)
    tasks = task_of_categories(names)
    assert np.bincount(tasks).tolist() == [20, 20, 20, 20]
    by_name = dict(zip(names, tasks))
    assert all(by_name[n] == t for t, task in enumerate(COCO_ORE_TASKS) for n in task)


def test_voc_names_map_onto_coco_ids():
    cats = [{"id": i, "name": n} for i, n in COCO_CATEGORIES]
    import pandas as pd

    ids = voc_category_ids(pd.Series(list(VOC_CLASSES)), cats, "test")
    by_id = dict(COCO_CATEGORIES)
    got = dict(zip(VOC_CLASSES, (by_id[i] for i in ids)))
    assert got["aeroplane"] == "airplane" and got["diningtable"] == "dining table"
    assert got["motorbike"] == "motorcycle" and got["pottedplant"] == "potted plant"
    assert got["sofa"] == "couch" and got["tvmonitor"] == "tv"
    assert all(got[n] == n for n in VOC_CLASSES if n not in VOC_TO_COCO_NAME)
    assert dict(zip(VOC_CLASSES, ids.tolist()))["tvmonitor"] == 72
    assert set(got.values()) <= set(COCO_ORE_TASKS[0])  # the 20 VOC classes are Task 1
    with pytest.raises(DatasetError, match="'cartoon'"):
        voc_category_ids(pd.Series(["cartoon"]), cats, "x.xml")


def test_voc_boxes_convert_from_one_based_corners(roots, built):
    _, _, src = roots
    w, h, objects = src["voc"]["000001"]
    iid = VOC_ID_OFFSET + 1
    anns = [a for a in built["test"]["annotations"] if a["image_id"] == iid]
    assert len(anns) == len(objects)
    img = next(i for i in built["test"]["images"] if i["id"] == iid)
    assert (img["width"], img["height"]) == (w, h)
    cats = dict(COCO_CATEGORIES)
    for a, (cls, _, (x1, y1, x2, y2)) in zip(anns, objects):
        assert a["bbox"] == [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]
        assert cats[a["category_id"]] == VOC_TO_COCO_NAME.get(cls, cls)


def test_image_ids_unique_and_file_names_absolute(built):
    ids = [i["id"] for s in built.values() for i in s["images"]]
    assert len(ids) == len(set(ids))
    voc = sorted(i for i in ids if i >= VOC_ID_OFFSET)
    assert voc == sorted(VOC_ID_OFFSET + n for n in VOC_SETS["trainval"] + VOC_SETS["test"])
    for s in built.values():
        for im in s["images"]:
            assert os.path.isabs(im["file_name"]) and os.path.isfile(im["file_name"])
        assert {a["image_id"] for a in s["annotations"]} <= {i["id"] for i in s["images"]}
        assert [a["id"] for a in s["annotations"]] == list(range(1, len(s["annotations"]) + 1))


def test_voc_image_id_rule():
    assert voc_image_id("000005") == 1_000_000_005
    assert voc_image_id("2011_000003") == 1_011_000_003
    assert voc_image_id("2012_004331") < 2**31
    with pytest.raises(DatasetError, match="expected NNNNNN"):
        voc_image_id("cat.jpg")


def test_val_subset_is_seeded_and_removed_from_train(roots, built):
    again = coco_voc.build(_cfg(roots), seed=0, progress=False)
    assert again == built
    val = {i["id"] for i in built["val"]["images"]}
    train = {i["id"] for i in built["train"]["images"]}
    assert not val & train and len(val) == 5
    assert {a["image_id"] for a in built["val"]["annotations"]} <= val
    other = coco_voc.build(_cfg(roots), seed=1, progress=False)
    assert {i["id"] for i in other["val"]["images"]} != val
    assert {i["id"] for i in other["val"]["images"]} | {i["id"] for i in other["train"]["images"]} == val | train
    none = coco_voc.build(_cfg(roots, val_images=0), seed=0, progress=False)
    assert none["val"]["images"] == [] and len(none["train"]["images"]) == 38


def test_difficult_and_crowd_as_label_only_boxes(roots):
    _, _, src = roots
    out = coco_voc.build(_cfg(roots, include_difficult=False, crowd_queries=False), seed=0, progress=False)
    labels = [a for s in out.values() for a in s["annotations"] if a.get("query") is False]
    n_difficult = sum(o[1] for w, h, objs in src["voc"].values() for o in objs)
    n_crowd = sum(a["iscrowd"] for k in ("train", "test") for a in src[k]["annotations"])
    assert n_difficult >= 2 and n_crowd == 2
    assert len(labels) == n_difficult + n_crowd


def test_keep_unannotated_test_images(roots):
    out = coco_voc.build(_cfg(roots, drop_unannotated_test=False), seed=0, progress=False)
    assert len(out["test"]["images"]) == 8 + 4


def test_missing_annotation_file_names_it(roots, tmp_path):
    coco, voc, _ = roots
    (tmp_path / "annotations").mkdir()
    cfg = CocoVocParams(coco_root=str(tmp_path), voc_root=str(voc))
    with pytest.raises(
        DatasetError,
        match=r"instances_train2017\.json not found: expected COCO 2017 annotations under coco_root/annotations/",
    ):
        coco_voc.build(cfg, seed=0, progress=False)
    with pytest.raises(DatasetError, match=r"data\.coco_voc\.coco_root is not set"):
        coco_voc.build(CocoVocParams(voc_root=str(voc)), seed=0, progress=False)
    with pytest.raises(DatasetError, match=r"nowhere not found"):
        coco_voc.build(CocoVocParams(coco_root=str(coco), voc_root=str(tmp_path / "nowhere")), seed=0, progress=False)


def test_malformed_files_are_named(roots, tmp_path):
    coco, voc, _ = roots
    bad = tmp_path / "coco"
    (bad / "annotations").mkdir(parents=True)
    (bad / "annotations" / "instances_train2017.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"instances_train2017\.json is not valid JSON"):
        coco_voc.build(CocoVocParams(coco_root=str(bad), voc_root=str(voc)), seed=0, progress=False)
    (bad / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []})
    )
    with pytest.raises(DatasetError, match=r"instances_train2017\.json: malformed COCO entry \(KeyError: 'width'\)"):
        coco_voc.build(CocoVocParams(coco_root=str(bad), voc_root=str(voc)), seed=0, progress=False)


def test_broken_voc_files_are_named(roots, tmp_path):
    coco, voc, _ = roots
    broken = tmp_path / "VOC2007"
    broken.mkdir()
    for d in ("Annotations", "JPEGImages", "ImageSets"):
        os.symlink(voc / d, broken / d)
    cfg = CocoVocParams(coco_root=str(coco), voc_root=str(broken), voc_test=("nosuchset",))
    with pytest.raises(DatasetError, match=r"ImageSets/Main/nosuchset\.txt not found: expected the VOC image set list"):
        coco_voc.build(cfg, seed=0, progress=False)
    xml_root = tmp_path / "VOCbad"
    write_voc(xml_root, {"trainval": [1], "test": [2]})
    (xml_root / "Annotations" / "000002.xml").write_text("<annotation><size><width>4")
    cfg = CocoVocParams(coco_root=str(coco), voc_root=str(xml_root))
    with pytest.raises(DatasetError, match=r"000002\.xml is not valid XML"):
        coco_voc.build(cfg, seed=0, progress=False)


def test_missing_image_is_skipped_with_a_warning(roots, tmp_path, caplog):
    coco, voc, _ = roots
    copy = tmp_path / "coco"
    (copy / "annotations").mkdir(parents=True)
    for name in ("instances_train2017.json", "instances_val2017.json"):
        os.symlink(coco / "annotations" / name, copy / "annotations" / name)
    os.symlink(coco / "train2017", copy / "train2017")
    (copy / "val2017").mkdir()
    kept = sorted(os.listdir(coco / "val2017"))[1:]
    for f in kept:
        os.symlink(coco / "val2017" / f, copy / "val2017" / f)
    with caplog.at_level(logging.WARNING):
        out = coco_voc.build(
            CocoVocParams(coco_root=str(copy), voc_root=str(voc), val_images=0), seed=0, progress=False
        )
    assert "1 of 8 images not found and skipped (000000000139.jpg" in caplog.text
    assert 139 not in {i["id"] for i in out["test"]["images"]}
    assert not any(a["image_id"] == 139 for a in out["test"]["annotations"])
    for f in kept:
        os.unlink(copy / "val2017" / f)
    with pytest.raises(DatasetError, match=r"none of the 8 images was found"):
        coco_voc.build(CocoVocParams(coco_root=str(copy), voc_root=str(voc)), seed=0, progress=False)
