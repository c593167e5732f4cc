"""The universal-embedding summary: an unweighted mean of per-dataset values, and its table picture."""

import json

import cv2
import pytest

from stages.config import Params, declared_view
from stages.errors import MissingInputError


def _metrics(queries, values, pretrained):
    keys = ("O-R@1", "O-mMP@5", "I-R@1", "I-mMP@5")
    return {
        "model": {"all": {"queries": queries, **dict(zip(keys, values))}},
        "pretrained": {"all": {"queries": queries, **dict(zip(keys, pretrained))}},
    }


def _params(datasets):
    return Params.model_validate({"datasets": datasets, "train_on": "synthetic", "backbones": ["resnet50"]})


def test_summary_stage_means_over_datasets(tmp_path, monkeypatch):
    from stages import summary

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "metrics" / "resnet50"
    folder.mkdir(parents=True)
    # 1,000 queries vs 10: the mean is still unweighted (UnED's mean over domains)
    (folder / "synthetic.json").write_text(json.dumps(_metrics(1000, [80, 60, 90, 70], [50, 40, 60, 45])))
    (folder / "lvis.json").write_text(json.dumps(_metrics(10, [40, None, 50, 30], [20, 10, 30, 15])))
    params = _params(["synthetic", "lvis"])
    summary.run(declared_view(params, summary.PARAMS), "resnet50")
    got = json.loads((tmp_path / "metrics" / "summary" / "resnet50.json").read_text())
    assert got["datasets"] == ["synthetic", "lvis"]
    assert got["model"]["mean"] == {"O-R@1": 60.0, "O-mMP@5": 60.0, "I-R@1": 70.0, "I-mMP@5": 50.0}
    assert got["pretrained"]["mean"]["O-R@1"] == 35.0 and got["model"]["lvis"]["queries"] == 10
    image = cv2.imread(str(tmp_path / "metrics" / "summary" / "resnet50.png"))
    assert image is not None and image.shape[1] > 800
    params = _params(["synthetic", "coco_voc"])
    with pytest.raises(MissingInputError, match="coco_voc.json"):
        summary.run(declared_view(params, summary.PARAMS), "resnet50")


def test_a_dataset_without_ground_truth_is_listed_apart():
    from stages.summary.table import summarize_datasets

    scored = {"model": {"all": {"queries": 4, "O-R@1": 50.0}}, "pretrained": {"all": {"queries": 4, "O-R@1": 25.0}}}
    photos = {"ground_truth": False, "gallery": 17, "queries": 0}
    out = summarize_datasets("b", {"synthetic": scored, "images": photos})
    assert out["datasets"] == ["synthetic"] and out["without_ground_truth"] == ["images"]
    assert out["model"]["mean"]["O-R@1"] == 50.0 and "images" not in out["model"]
