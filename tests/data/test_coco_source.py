"""The ``coco`` source on labelme-examples' real COCO file (3 VOC photos, 12 boxes, 21 categories)."""

from __future__ import annotations

import pytest
from test_real_files import _labelme_examples

from stages.config import Params
from stages.data import build_dataset, write_dataset
from stages.tables import DatasetError, load_split


@pytest.fixture(scope="module")
def folder():
    return _labelme_examples() / "instance_segmentation" / "data_dataset_coco"


def _params(folder, seed=0, **cfg) -> Params:
    coco = {"annotations": str(folder / "annotations.json"), "images": str(folder), **cfg}
    return Params.model_validate({"seed": seed, "datasets": ["coco"], "train_on": "coco", "data": {"coco": coco}})


def _ids(split: dict) -> list[int]:
    return [im["id"] for im in split["images"]]


def test_seeded_split_is_reproducible_and_complete(folder, tmp_path):
    splits = build_dataset("coco", _params(folder, test_share=0.34), tmp_path)
    assert set(splits) == {"train", "test"}
    assert len(_ids(splits["test"])) == 1 and len(_ids(splits["train"])) == 2
    assert sorted(_ids(splits["train"]) + _ids(splits["test"])) == [0, 1, 2]
    assert splits == build_dataset("coco", _params(folder, test_share=0.34), tmp_path)  # same seed, same split
    boxes = {s: len(c["annotations"]) for s, c in splits.items()}
    assert boxes["train"] + boxes["test"] == 12
    names = sorted(c["name"] for c in splits["train"]["categories"])
    assert len(names) == 21 and "person" in names and "bus" in names
    write_dataset(splits, tmp_path)
    test = load_split(tmp_path / "test.json")
    assert test.images["path"].map(lambda p: p.endswith(".jpg")).all() and len(test.boxes) == boxes["test"]


def test_user_split_files_by_name_and_by_id(folder, tmp_path):
    (tmp_path / "test.txt").write_text("# held out\nJPEGImages/2011_000006.jpg\n\n")
    splits = build_dataset("coco", _params(folder, test_split=str(tmp_path / "test.txt")), tmp_path)
    assert _ids(splits["test"]) == [2] and _ids(splits["train"]) == [0, 1]
    assert len(splits["test"]["annotations"]) == 6  # 2011_000006: six boxes
    (tmp_path / "train.txt").write_text("0\n2011_000025.jpg\nnot-an-image.jpg\n")
    (tmp_path / "test2.txt").write_text("2\n")
    splits = build_dataset(
        "coco",
        _params(folder, train_split=str(tmp_path / "train.txt"), test_split=str(tmp_path / "test2.txt")),
        tmp_path,
    )
    assert _ids(splits["train"]) == [0, 1] and _ids(splits["test"]) == [2]


def test_bad_split_files_are_user_errors(folder, tmp_path):
    (tmp_path / "a.txt").write_text("0\n1\n")
    (tmp_path / "b.txt").write_text("1\n2\n")
    with pytest.raises(DatasetError, match="in both split files"):
        build_dataset(
            "coco", _params(folder, train_split=str(tmp_path / "a.txt"), test_split=str(tmp_path / "b.txt")), tmp_path
        )
    (tmp_path / "c.txt").write_text("nothing.jpg\n")
    with pytest.raises(DatasetError, match="none of its 1 entries"):
        build_dataset("coco", _params(folder, test_split=str(tmp_path / "c.txt")), tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        build_dataset("coco", _params(folder, test_split=str(tmp_path / "missing.txt")), tmp_path)
    with pytest.raises(DatasetError, match=r"data\.coco\.annotations is not set"):
        build_dataset("coco", Params(), tmp_path)
