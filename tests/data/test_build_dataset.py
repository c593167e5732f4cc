"""The data stage's dispatcher and writer (stages/data/__init__.py, coco_json.write_dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_formats import write_coco, write_voc

from stages.config import Params
from stages.data import SOURCES, build_dataset, write_dataset
from stages.tables import DatasetError, load_split


def _params(**data) -> Params:
    return Params.model_validate({"data": data})


def test_synthetic_through_the_dispatcher(tmp_path):
    params = _params(synthetic={"train_images": 2, "test_images": 1, "image_size": 64, "max_object": 32})
    splits = build_dataset("synthetic", params, tmp_path)
    assert set(splits) == {"train", "test"}
    assert len(splits["train"]["images"]) == 2 and len(splits["test"]["images"]) == 1
    assert all((tmp_path / im["file_name"]).is_file() for im in splits["train"]["images"])


def test_coco_voc_written_and_read_back(tmp_path):
    coco, voc = tmp_path / "coco", tmp_path / "VOC2007"
    write_coco(coco, "train2017", [1, 2, 3, 4], [2, 1, 0, 3])
    write_coco(coco, "val2017", [7, 8], [1, 2], seed=1)
    write_voc(voc, {"trainval": [11, 12], "test": [21]})
    params = _params(
        coco_voc={"coco_root": str(coco), "voc_root": str(voc), "val_images": 2, "include_difficult": False}
    )
    splits = build_dataset("coco_voc", params, tmp_path / "out")
    paths = write_dataset(splits, tmp_path / "out")
    assert [p.name for p in paths] == ["train.json", "val.json", "test.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.json", "train.json", "val.json"]
    for split, coco_dict in splits.items():
        assert json.loads((tmp_path / "out" / f"{split}.json").read_text()) == coco_dict
        table = load_split(tmp_path / "out" / f"{split}.json")
        assert len(table.images) == len(coco_dict["images"]) and len(table.boxes) == len(coco_dict["annotations"])
        assert all(Path(p).is_file() for p in table.images["path"])
        assert len(table.categories) == 80
    assert len(splits["val"]["images"]) == 2 and len(splits["train"]["images"]) == 4


def test_write_dataset_replaces_atomically(tmp_path):
    split = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    write_dataset({"test": split}, tmp_path)
    write_dataset({"test": {**split, "categories": [{"id": 2, "name": "b"}]}}, tmp_path)
    assert json.loads((tmp_path / "test.json").read_text())["categories"] == [{"id": 2, "name": "b"}]
    assert [p.name for p in tmp_path.iterdir()] == ["test.json"]


def test_every_source_dispatches_and_unknown_fails(tmp_path):
    params = Params()
    for name in SOURCES[1:]:  # real sources without paths: a message naming the key
        with pytest.raises(DatasetError, match=rf"data\.{name}\.(coco_root|annotations|root|paths) is not set"):
            build_dataset(name, params, tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet", params, tmp_path)


def test_load_split_reads_label_only_boxes(tmp_path):
    import json

    from stages.tables import load_split

    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 5, 2, 2], "query": False},
        ],
        "categories": [{"id": 3, "name": "x"}],
    }
    (tmp_path / "test.json").write_text(json.dumps(coco))
    boxes = load_split(tmp_path / "test.json").boxes
    assert boxes["query"].tolist() == [True, False]
    assert boxes[["x2", "y2"]].to_numpy().tolist() == [[4, 4], [7, 7]]
