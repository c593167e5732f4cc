"""The real dvc CLI on a tiny folder of real photos (the `images` source): the whole DAG runs without
labels, a no-op repro runs only the scan, and added / removed photos update the objects and the
index incrementally (the trained model kept: `dvc repro extract@images`, then `dvc repro -s` of
index and evaluate, as the README says)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import skimage
from PIL import Image
from ruamel.yaml import YAML

from tests.e2e.test_dvc_pipeline import ROOT, merge, sh

pytestmark = pytest.mark.e2e
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png"]
METRICS = "metrics/efficientnet_lite0/images.json"
SUMMARY = "data/images/objects/summary.json"


def small(name: str, dst: Path) -> None:
    im = Image.open(Path(skimage.data_dir) / name).convert("RGB")
    im.thumbnail((96, 96))
    im.save(dst)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("photos_pipeline")
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "sources", repo / "data" / "sources")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "photos").mkdir()
    for name in PHOTOS[:3]:
        small(name, repo / "photos" / name)
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    tiny = yaml.load(ROOT / "tests" / "e2e" / "tiny_params.yaml")
    params = merge(yaml.load(ROOT / "params.yaml"), tiny)
    params = merge(
        params,
        {
            "datasets": ["images"],
            "train_on": "images",
            "watch": ["images"],
            "data": {"images": {"paths": ["photos"]}},
            "extract": {"graph": {"max_side": 96, "max_objects": 20}},
        },
    )
    with open(repo / "params.yaml", "w") as f:
        yaml.dump(params, f)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        sh(repo, *cmd)
    sh(repo, "git", "-c", "user.email=ci@example.invalid", "-c", "user.name=CI", "commit", "-qm", "photos")
    return repo


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def embedded(out: str) -> tuple[int, int]:
    """(embedded, reused) gallery objects of the index stage's log line."""
    m = re.search(r"(\d+) embedded, (\d+) reused", out)
    assert m, out[-3000:]
    return int(m.group(1)), int(m.group(2))


def update(repo: Path) -> str:
    """The gallery update of the README: objects of the changed folder, then index and evaluate
    alone (``-s``), so the model is not retrained on the grown collection."""
    out = sh(repo, "dvc", "repro", "extract@images")
    return out + sh(repo, "dvc", "repro", "-s", "index@efficientnet_lite0-images", "evaluate@efficientnet_lite0-images")


def test_photo_folder_end_to_end_and_incremental(repo):
    out = sh(repo, "dvc", "repro")
    assert {"scan@images", "data@images", "extract@images", "train@efficientnet_lite0"} <= ran(out)
    metrics = json.loads((repo / METRICS).read_text())
    assert metrics["ground_truth"] is False and metrics["queries"] == 0 and metrics["gallery"] > 0
    assert json.loads((repo / "data/images/dataset/report.json").read_text())["images"] == 3
    first = json.loads((repo / SUMMARY).read_text())["splits"]["test"]
    assert first["images"] == 3 and first["objects"] == metrics["gallery"]

    again = sh(repo, "dvc", "repro")
    assert ran(again) == {"scan@images"}, again  # the listing did not change: nothing else reruns
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=ci@example.invalid", "-c", "user.name=CI", "commit", "-qm", "run")

    for name in PHOTOS[3:]:
        small(name, repo / "photos" / name)
    out = update(repo)
    assert {"data@images", "extract@images", "index@efficientnet_lite0-images"} <= ran(out)
    assert "train@efficientnet_lite0" not in ran(out)
    grown = json.loads((repo / SUMMARY).read_text())["splits"]["test"]
    assert grown["images"] == 5 and grown["objects"] > first["objects"]
    new, reused = embedded(out)
    assert reused == first["objects"] and new == grown["objects"] - first["objects"]  # only the new photos
    assert json.loads((repo / METRICS).read_text())["gallery"] == grown["objects"]

    (repo / "photos" / PHOTOS[0]).unlink()
    out = update(repo)
    shrunk = json.loads((repo / SUMMARY).read_text())["splits"]["test"]
    assert shrunk["images"] == 4 and shrunk["objects"] < grown["objects"]
    assert embedded(out) == (0, shrunk["objects"])
