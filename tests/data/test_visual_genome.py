"""Visual Genome (stages/data/visual_genome.py) on tiny objects.json / image_data.json files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_formats import write_jpg

from stages.config import VisualGenomeParams
from stages.data import visual_genome
from stages.tables import DatasetError

N_IMAGES = 12
# (synsets, names): synset wins; else the lower-cased first name; neither: dropped
KINDS = [
    (["tree.n.01"], ["trees"]),
    ([], ["Man "]),
    (["man.n.01"], ["guy"]),
    ([], ["window"]),
    (["shirt.n.01"], ["shirt"]),
    ([], ["unique thing"]),
    ([], []),
]


@pytest.fixture(scope="module")
def vg_root(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("vg")
    rng = np.random.default_rng(0)
    image_data, objects, flat = [], [], []
    for i in range(1, N_IMAGES + 1):
        folder = "VG_100K" if i % 2 else "VG_100K_2"
        w, h = 120, 90
        write_jpg(root / folder / f"{i}.jpg", w, h, seed=i)
        image_data.append(
            {
                "width": w,
                "height": h,
                "url": f"https://cs.stanford.edu/people/rak248/{folder}/{i}.jpg",
                "image_id": i,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        objs = []
        for k in range(6):
            kind = KINDS[(i + k) % 5] if not (i == 3 and k == 0) else KINDS[5]  # one unique class
            if i == 5 and k == 5:
                kind = KINDS[6]
            bw, bh = int(rng.integers(8, 60)), int(rng.integers(8, 60))
            o = {
                "object_id": 1000 * i + k,
                "x": int(rng.integers(0, w - bw)),
                "y": int(rng.integers(0, h - bh)),
                "w": bw,
                "h": bh,
                "names": kind[1],
                "synsets": kind[0],
                "merged_object_ids": [],
            }
            objs.append(o)
            flat.append((i, o))
        objects.append({"image_id": i, "objects": objs, "image_url": image_data[-1]["url"]})
    (root / "image_data.json").write_text(json.dumps(image_data))
    (root / "objects.json").write_text(json.dumps(objects))
    return root, flat


def _cfg(root, **kw) -> VisualGenomeParams:
    return VisualGenomeParams(root=str(root), **{"min_side": 16, "max_queries": 1000, **kw})


def test_classes_and_every_object_kept(vg_root):
    root, flat = vg_root
    out = visual_genome.build(_cfg(root), seed=0)["test"]
    assert len(out["images"]) == N_IMAGES
    assert all(Path(i["file_name"]).is_file() for i in out["images"])
    assert len(out["annotations"]) == len(flat) - 1  # the object with neither synset nor name
    names = {c["id"]: c["name"] for c in out["categories"]}
    assert sorted(names.values()) == ["man", "man.n.01", "shirt.n.01", "tree.n.01", "unique thing", "window"]
    assert list(names) == list(range(1, 7))
    got = sorted(names[a["category_id"]] for a in out["annotations"])
    expect = sorted((o["synsets"] or [None])[0] or o["names"][0].strip().lower() for _, o in flat if o["names"])
    assert got == expect


def test_query_rule(vg_root):
    root, _ = vg_root
    out = visual_genome.build(_cfg(root), seed=0)["test"]
    names = {c["id"]: c["name"] for c in out["categories"]}
    queries = [a for a in out["annotations"] if a.get("query", True)]
    labels = [a for a in out["annotations"] if a.get("query") is False]
    assert queries and labels
    assert all(a["bbox"][2] >= 16 and a["bbox"][3] >= 16 for a in queries)
    # 'unique thing' occurs in fewer than 2 images: never a query
    counts = {}
    for a in out["annotations"]:
        counts.setdefault(names[a["category_id"]], set()).add(a["image_id"])
    assert len(counts["unique thing"]) < 2
    assert all(len(counts[names[a["category_id"]]]) >= 2 for a in queries)
    eligible = [
        a
        for a in out["annotations"]
        if a["bbox"][2] >= 16 and a["bbox"][3] >= 16 and len(counts[names[a["category_id"]]]) >= 2
    ]
    assert len(queries) == len(eligible)  # max_queries not reached: every eligible box


def test_query_sample_is_seeded_and_capped(vg_root):
    root, _ = vg_root

    def qids(seed, **kw):
        out = visual_genome.build(_cfg(root, **kw), seed=seed)["test"]
        return [(a["image_id"], tuple(a["bbox"])) for a in out["annotations"] if a.get("query", True)], out

    a, _ = qids(0, max_queries=7)
    b, _ = qids(0, max_queries=7)
    c, _ = qids(1, max_queries=7)
    assert len(a) == 7 and a == b and a != c
    capped, out = qids(0, max_per_class=2)
    per_class = {}
    for ann in out["annotations"]:
        if ann.get("query", True):
            per_class[ann["category_id"]] = per_class.get(ann["category_id"], 0) + 1
    assert max(per_class.values()) == 2 and len(capped) == 2 * len(per_class)


def test_image_subset(vg_root):
    root, _ = vg_root
    out = visual_genome.build(_cfg(root, max_images=5), seed=0)["test"]
    ids = {i["id"] for i in out["images"]}
    assert len(ids) == 5 and {a["image_id"] for a in out["annotations"]} <= ids
    assert ids == {i["id"] for i in visual_genome.build(_cfg(root, max_images=5), seed=0)["test"]["images"]}


def test_errors_name_the_file(vg_root, tmp_path):
    root, _ = vg_root
    with pytest.raises(DatasetError, match=r"image_data\.json not found: expected Visual Genome image_data\.json"):
        visual_genome.build(_cfg(tmp_path), seed=0)
    (tmp_path / "image_data.json").write_text((root / "image_data.json").read_text())
    with pytest.raises(DatasetError, match=r"VG_100K not found: expected a Visual Genome image folder"):
        visual_genome.build(_cfg(tmp_path), seed=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "image_data.json").write_text((root / "image_data.json").read_text())
    for d in ("VG_100K", "VG_100K_2"):
        (bad / d).symlink_to(root / d)
    (bad / "objects.json").write_text(json.dumps([{"image_id": 1, "objects": [{"x": 1}]}]))
    with pytest.raises(DatasetError, match=r"objects\.json: malformed object entry \(KeyError: 'y'\)"):
        visual_genome.build(_cfg(bad), seed=0)
