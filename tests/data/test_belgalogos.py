"""BelgaLogos (stages/data/belgalogos.py) on a tiny folder in the dataset's own file formats."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import pytest
from dataset_formats import write_jpg

from stages.config import BelgaLogosParams
from stages.data import belgalogos
from stages.tables import DatasetError

IMAGES = [f"{n:08d}.jpg" for n in (1, 2, 5, 17, 230, 4080, 9999, 10000)]
# local ground truth: id logo image type state x1 y1 x2 y2 (tab separated)
GT = [
    (1, "Adidas", IMAGES[0], "logo", 1, 10, 12, 40, 30),
    (2, "Adidas", IMAGES[3], "logo", 0, 5, 5, 20, 15),
    (3, "ELeclerc", IMAGES[1], "logo", 1, 30, 20, 70, 44),
    (4, "Nike", IMAGES[2], "logo", 1, 0, 0, 25, 25),
    (5, "Nike", IMAGES[4], "logo", 1, 50, 40, 90, 60),
    (6, "US_President", IMAGES[5], "logo", 1, 8, 8, 48, 40),
    (7, "Adidas-text", IMAGES[6], "logo", 0, 2, 3, 30, 12),
]
# qset1 queries: name image x1 y1 x2 y2 (the file's own spellings: Addidas, Eleclerc, President)
QUERIES = [
    ("Addidas1", IMAGES[0], 10, 12, 40, 30),
    ("Eleclerc1", IMAGES[1], 30, 20, 70, 44),
    ("Nike2", IMAGES[4], 50, 40, 90, 60),
    ("President1", IMAGES[5], 8, 8, 48, 40),
    ("Addidas-text1", IMAGES[6], 2, 3, 30, 12),
]


def _write(root: Path, gt=GT, queries=QUERIES) -> None:
    for k, name in enumerate(IMAGES):
        write_jpg(root / "images" / name, 100 + 4 * k, 80, seed=k)
    (root / "qset3_internal_and_local.gt").write_text("".join("\t".join(map(str, r)) + "\n" for r in gt))
    (root / "qset1_internal.qry").write_text("".join(" ".join(map(str, r)) + "\n" for r in queries))


@pytest.fixture(scope="module")
def belga(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("BelgaLogos")
    _write(root)
    return root


def test_gallery_queries_and_ground_truth(belga):
    out = belgalogos.build(BelgaLogosParams(root=str(belga)))
    test = out["test"]
    assert list(out) == ["test"]
    assert [Path(i["file_name"]).name for i in test["images"]] == IMAGES
    assert [i["id"] for i in test["images"]] == [1, 2, 5, 17, 230, 4080, 9999, 10000]  # file numbers
    for im in test["images"]:
        assert cv2.imread(im["file_name"]).shape[:2] == (im["height"], im["width"])
    cats = {c["id"]: c["name"] for c in test["categories"]}
    assert sorted(cats.values()) == ["Adidas", "Adidas-text", "ELeclerc", "Nike", "US_President"]
    queries = [a for a in test["annotations"] if a.get("query", True)]
    labels = [a for a in test["annotations"] if a.get("query") is False]
    assert len(queries) == 5 and len(labels) == 7
    name_of = {i["id"]: Path(i["file_name"]).name for i in test["images"]}
    got = sorted((cats[a["category_id"]], name_of[a["image_id"]], tuple(a["bbox"])) for a in queries)
    assert got == sorted(
        [
            ("Adidas", IMAGES[0], (10, 12, 30, 18)),
            ("ELeclerc", IMAGES[1], (30, 20, 40, 24)),
            ("Nike", IMAGES[4], (50, 40, 40, 20)),
            ("US_President", IMAGES[5], (8, 8, 40, 32)),
            ("Adidas-text", IMAGES[6], (2, 3, 28, 9)),
        ]
    )
    # image-level truth: which images contain each logo
    has = {}
    for a in labels:
        has.setdefault(cats[a["category_id"]], set()).add(name_of[a["image_id"]])
    assert has["Nike"] == {IMAGES[2], IMAGES[4]} and has["Adidas"] == {IMAGES[0], IMAGES[3]}


def test_junk_instances_optional(belga):
    test = belgalogos.build(BelgaLogosParams(root=str(belga), include_junk=False))["test"]
    assert sum(a.get("query") is False for a in test["annotations"]) == 5  # two state-0 instances left out


def test_errors_name_the_file(belga, tmp_path, caplog):
    with pytest.raises(
        DatasetError, match=r"qset3_internal_and_local\.gt not found: expected the BelgaLogos local ground truth"
    ):
        belgalogos.build(BelgaLogosParams(root=str(tmp_path)))
    bad = tmp_path / "unknown"
    _write(bad, queries=QUERIES + [("Pepsi1", IMAGES[0], 1, 1, 9, 9)])
    with pytest.raises(DatasetError, match=r"qset1_internal\.qry: queries \['Pepsi1'\] match no logo"):
        belgalogos.build(BelgaLogosParams(root=str(bad)))
    cols = tmp_path / "cols"
    _write(cols, gt=[r[:6] for r in GT])
    with pytest.raises(DatasetError, match=r"qset3_internal_and_local\.gt: 6 columns, expected 9"):
        belgalogos.build(BelgaLogosParams(root=str(cols)))
    gone = tmp_path / "gone"
    _write(gone)
    (gone / "images" / IMAGES[5]).unlink()
    with pytest.raises(DatasetError, match=r"qset3_internal_and_local\.gt: 1 ground truth images not in .*images"):
        belgalogos.build(BelgaLogosParams(root=str(gone)))
    broken = tmp_path / "broken"
    _write(broken)
    (broken / "images" / IMAGES[7]).write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        test = belgalogos.build(BelgaLogosParams(root=str(broken)))["test"]
    assert len(test["images"]) == 7 and "1 unreadable images skipped (00010000.jpg" in caplog.text
