"""Tests of the embedded synthetic dataset (stages/data/synthetic.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.config import SyntheticParams
from stages.data import synthetic as syn
from stages.data.synthetic import class_names, generate_split

CFG = SyntheticParams(image_size=96, classes=24, objects_per_image=(3, 8), min_object=6, max_object=48)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate_split(CFG, "train", 12, seed=0, out_dir=out, progress=False)


# --------------------------------------------------------------------------- classes


def test_class_names_distinct_and_spread():
    names = class_names(24)
    assert len(names) == 24 and len(set(names)) == 24
    attrs = [n.split("-") for n in names]
    assert all(len(a) == 3 for a in attrs)
    colours, textures, shapes = (Counter(a[k] for a in attrs) for k in range(3))
    assert set(colours) <= set(syn.COLOURS)
    assert set(textures) <= set(syn.TEXTURES) and set(shapes) <= set(syn.SHAPES)
    # spread over the attributes, not 24 circles
    assert len(shapes) >= 8 and len(textures) >= 4 and len(colours) >= 6
    assert max(shapes.values()) - min(shapes.values()) <= 1
    assert max(colours.values()) - min(colours.values()) <= 1
    # deterministic, prefix-stable, up to 96 classes
    assert class_names(24) == names
    big = class_names(96)
    assert len(set(big)) == 96 and big[:24] == names and class_names(4) == names[:4]


def test_class_colours_are_well_separated():
    rgb = np.array(list(syn.COLOURS.values()), float)
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + np.eye(len(rgb)) * 1e9
    assert len(rgb) >= 6 and d.min() > 80


def test_class_names_rejects_bad_counts():
    with pytest.raises(ValueError):
        class_names(0)


# --------------------------------------------------------------------------- COCO output


def test_coco_structure(split):
    out, coco = split
    assert set(coco) == {"images", "annotations", "categories"}
    assert [im["id"] for im in coco["images"]] == list(range(1, 13))
    for im in coco["images"]:
        assert im["file_name"] == f"images/train/{im['id']:06d}.png"
        assert im["width"] == im["height"] == CFG.image_size
        assert _read_rgb(out / im["file_name"]).shape == (CFG.image_size, CFG.image_size, 3)
    assert coco["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(class_names(CFG.classes))]
    ann = coco["annotations"]
    assert ann, "no annotations at all"
    assert len({a["id"] for a in ann}) == len(ann)
    assert set(ann[0]) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
    image_ids = {im["id"] for im in coco["images"]}
    for a in ann:
        assert a["image_id"] in image_ids
        assert 1 <= a["category_id"] <= CFG.classes
        assert a["iscrowd"] == 0
        assert all(isinstance(v, float) for v in a["bbox"])


def test_boxes_inside_image_and_not_empty(split):
    _, coco = split
    s = CFG.image_size
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0
        assert 0 <= x and 0 <= y and x + w <= s and y + h <= s
        assert syn.MIN_VISIBLE_PIXELS <= a["area"] <= w * h


def test_objects_per_image_within_range(split):
    _, coco = split
    lo, hi = CFG.objects_per_image
    counts = Counter(a["image_id"] for a in coco["annotations"])
    assert max(counts.values()) <= hi
    # occlusion drops only a minority of the objects
    assert sum(counts.values()) / len(coco["images"]) >= 0.7 * (lo + hi) / 2


def test_deterministic(split, tmp_path):
    out, coco = split
    again = generate_split(CFG, "train", 12, seed=0, out_dir=tmp_path, progress=False)
    assert again == coco
    for im in coco["images"]:
        assert (out / im["file_name"]).read_bytes() == (tmp_path / im["file_name"]).read_bytes()


def test_first_images_do_not_depend_on_split_size(split, tmp_path):
    out, coco = split
    few = generate_split(CFG, "train", 3, seed=0, out_dir=tmp_path, progress=True)
    assert few["images"] == coco["images"][:3]
    assert few["annotations"] == [a for a in coco["annotations"] if a["image_id"] <= 3]
    name = "images/train/000003.png"
    assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_train_test_and_seeds_differ(split, tmp_path):
    out, coco = split
    test = generate_split(CFG, "test", 3, seed=0, out_dir=tmp_path, progress=False)
    other = generate_split(CFG, "train", 3, seed=1, out_dir=tmp_path / "s1", progress=False)
    assert test["images"][0]["file_name"] == "images/test/000001.png"
    assert other["images"][0]["file_name"] == "images/train/000001.png"
    for i in range(1, 4):
        name = f"{i:06d}.png"
        ref = (out / "images/train" / name).read_bytes()
        assert (tmp_path / "images/test" / name).read_bytes() != ref
        assert (tmp_path / "s1/images/train" / name).read_bytes() != ref
    first = [a for a in coco["annotations"] if a["image_id"] <= 3]
    assert [a["bbox"] for a in test["annotations"]] != [a["bbox"] for a in first]


# --------------------------------------------------------------------------- sizes


def test_size_power_law_is_long_tailed():
    rng = np.random.default_rng(0)
    s = syn._sample_sizes(rng, 20_000, 8.0, 128.0, 1.6)
    assert s.min() >= 8 and s.max() <= 128
    assert np.median(s) < 0.75 * s.mean()
    assert (s < (8 + 128) / 2).mean() > 0.8
    # alpha = 1 (log-uniform) is handled too
    s1 = syn._sample_sizes(rng, 1000, 8.0, 128.0, 1.0)
    assert s1.min() >= 8 and s1.max() <= 128


def test_annotated_boxes_are_long_tailed(tmp_path):
    cfg = SyntheticParams(image_size=128, objects_per_image=(6, 8), min_object=6, max_object=96, distractors=(0, 1))
    coco = generate_split(cfg, "train", 20, seed=3, out_dir=tmp_path, progress=False)
    sides = np.array([max(a["bbox"][2:]) for a in coco["annotations"]])
    assert len(sides) > 80
    assert np.median(sides) < 0.85 * sides.mean()
    assert (sides < (6 + 96) / 2).mean() > 0.7


# --------------------------------------------------------------------------- visibility and appearance


def test_annotations_describe_the_visible_mask():
    cfg = SyntheticParams(image_size=96, objects_per_image=(10, 12), min_object=12, max_object=60)
    dropped = 0
    for i in range(6):
        img, inst, objs = syn._render_scene(cfg, np.random.default_rng([7, i]))
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert inst.max() == len(objs) <= 12
        dropped += 12 - len(objs)
        for o in objs:
            ys, xs = np.nonzero(inst == o["instance"])
            assert o["area"] == len(xs) >= syn.MIN_VISIBLE_PIXELS
            assert o["area"] >= syn.MIN_VISIBLE_FRACTION * o["drawn_area"]
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            assert o["bbox"] == [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    assert dropped > 0  # crowded scenes do occlude objects


def test_solid_objects_have_their_class_colour():
    cfg = SyntheticParams(image_size=128, min_object=24, max_object=64)
    table = syn._class_table(cfg.classes)
    checked = 0
    for i in range(20):
        img, inst, objs = syn._render_scene(cfg, np.random.default_rng([11, i]))
        for o in objs:
            colour, texture, _ = table[o["category_id"] - 1]
            if texture != "solid":
                continue
            core = cv2.erode((inst == o["instance"]).astype(np.uint8), np.ones((3, 3), np.uint8))
            if core.sum() < 30:
                continue
            median = np.median(img[core > 0].astype(float), axis=0)
            assert np.abs(median - syn.COLOURS[colour]).max() < 40, (colour, median)
            checked += 1
    assert checked >= 5


def test_box_crop_contains_the_class_colour(split):
    out, coco = split
    names = class_names(CFG.classes)
    images = {im["id"]: im for im in coco["images"]}
    checked = 0
    for a in coco["annotations"]:
        colour, texture, _ = names[a["category_id"] - 1].split("-")
        if texture not in ("solid", "striped", "checkered") or a["area"] < 60:
            continue
        img = _read_rgb(out / images[a["image_id"]]["file_name"]).astype(int)
        x, y, w, h = map(int, a["bbox"])
        crop = img[y : y + h, x : x + w]
        close = (np.abs(crop - syn.COLOURS[colour]).max(axis=2) < 45).sum()
        # solid: most visible pixels; striped/checkered: the light half of them
        need = 0.5 if texture == "solid" else 0.2
        assert close >= need * a["area"], (names[a["category_id"] - 1], close, a["area"])
        checked += 1
    assert checked >= 3
