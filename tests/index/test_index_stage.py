"""The index stage streams: gallery crops embedded chunk by chunk into shards; query boxes exclude "query": false."""

import cv2
import numpy as np
import pandas as pd
import torch

from stages.config import Params
from stages.crops import encode_crop
from stages.crops.tensors import decode_to_tensor
from stages.index.build import embed_gallery, embed_queries, iter_query_crops, query_boxes
from stages.shards import ShardWriter, objects_table
from stages.tables import ImageTable
from stages.vectors.shards import shard_rows, vector_shards


class MeanColour:
    """A stand-in model: the mean colour of each crop and its square (6-d)."""

    input_size = 16

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3))
        return torch.cat([m, m**2], dim=1)


class AreaTagged(MeanColour):
    """A stand-in routed model: the mean colour, then the box area it was given for the crop."""

    routed = True

    def embed(self, x: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().embed(x), areas.reshape(-1, 1).float()], dim=1)


def _objects(tmp_path, rng, n=53):
    w = ShardWriter(tmp_path / "objects", "test", rows_per_shard=20)
    crops = [
        encode_crop(
            rng.integers(0, 255, (int(rng.integers(4, 30)), int(rng.integers(4, 30)), 3), dtype=np.uint8), "png"
        )
        for _ in range(n)
    ]
    xy = rng.uniform(0, 50, (n, 2))
    cols = {
        "object_id": np.arange(n),
        "image_id": rng.integers(0, 5, n),
        "split": ["test"] * n,
        "x1": xy[:, 0],
        "y1": xy[:, 1],
        "x2": xy[:, 0] + 5,
        "y2": xy[:, 1] + 5,
        "area": 1.0 + 10.0 * np.arange(n),  # distinct: a routed net must get each object's own
        "score": np.ones(n),
        "crop": crops,
        "extractor": ["t"] * n,
    }
    w.add(objects_table(cols))
    w.close()
    return crops


def test_gallery_embedded_chunk_by_chunk(tmp_path):
    rng = np.random.default_rng(0)
    crops = _objects(tmp_path, rng)
    params = Params.model_validate({"index": {"chunk_rows": 8, "batch_size": 3}})
    nets = {"model": MeanColour(), "pretrained": MeanColour()}
    for name in nets:
        (tmp_path / "out" / name).mkdir(parents=True)
    n, _ = embed_gallery(tmp_path / "objects", nets, tmp_path / "out", params)
    assert n == 53
    paths = vector_shards(tmp_path / "out" / "model")
    assert shard_rows(paths).max() <= 8 and shard_rows(paths).sum() == 53
    streamed = np.concatenate([np.load(p) for p in paths])
    at_once = MeanColour().embed(decode_to_tensor(crops, 16).float().div_(255)).numpy()
    np.testing.assert_allclose(streamed, at_once, rtol=1e-5, atol=1e-6)
    meta = pd.read_parquet(tmp_path / "out" / "gallery.parquet")
    assert meta["object_id"].tolist() == list(range(53)) and "crop" not in meta


def _table(tmp_path, rng):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
        paths.append(str(p))
    images = pd.DataFrame({"image_id": [10, 11, 12], "path": paths, "width": 80, "height": 60})
    boxes = pd.DataFrame(
        {
            "image_id": [10, 10, 11, 12, 12, 12],
            "category_id": [1, 2, 1, 3, 3, 2],
            "x1": [0.0, 5, 70, 10, 20, 200],
            "y1": [0.0, 5, 50, 10, 20, 200],
            "x2": [20.0, 30, 100, 40, 50, 220],
            "y2": [20.0, 30, 70, 40, 50, 220],
            "query": [True, False, True, True, True, True],
        }
    )
    return ImageTable(images, boxes, pd.DataFrame({"category_id": [1, 2, 3], "name": ["a", "b", "c"]}))


def test_query_boxes_skip_query_false_and_chunk(tmp_path):
    rng = np.random.default_rng(1)
    table = _table(tmp_path, rng)
    assert len(query_boxes(table)) == 5
    chunks = list(iter_query_crops(table, crop_size=16, chunk=2))
    rows = pd.concat([r for r, _ in chunks], ignore_index=True)
    # box 2 (query: false) is not a query; the box outside image 12 is dropped; image 11's box is clipped
    assert rows["category_id"].tolist() == [1, 1, 3, 3]
    assert rows.loc[1, ["x2", "y2"]].tolist() == [80, 60] and rows.loc[1, "area"] == 10 * 10
    assert sum(len(c) for _, c in chunks) == 4 and len(chunks) == 2

    params = Params.model_validate({"extract": {"crop_size": 16}, "index": {"chunk_rows": 3}})
    (tmp_path / "out" / "model").mkdir(parents=True)
    assert embed_queries(table, {"model": MeanColour()}, tmp_path / "out", params) == 4
    assert np.load(tmp_path / "out" / "model" / "queries.npy").shape == (4, 6)
    assert len(pd.read_parquet(tmp_path / "out" / "queries.parquet")) == 4


def test_a_routed_model_gets_the_box_area_of_every_gallery_object_and_query(tmp_path):
    rng = np.random.default_rng(0)
    _objects(tmp_path, rng)
    params = Params.model_validate({"index": {"chunk_rows": 8, "batch_size": 3}, "extract": {"crop_size": 16}})
    nets = {"model": AreaTagged(), "pretrained": MeanColour()}
    for name in nets:
        (tmp_path / "out" / name).mkdir(parents=True)
    embed_gallery(tmp_path / "objects", nets, tmp_path / "out", params)
    vectors = np.concatenate([np.load(p) for p in vector_shards(tmp_path / "out" / "model")])
    assert vectors[:, -1].tolist() == (1.0 + 10.0 * np.arange(53)).tolist()
    assert np.concatenate([np.load(p) for p in vector_shards(tmp_path / "out" / "pretrained")]).shape[1] == 6

    table = _table(tmp_path, np.random.default_rng(1))
    embed_queries(table, {"model": AreaTagged()}, tmp_path / "q", params)
    queries = pd.read_parquet(tmp_path / "q" / "queries.parquet")
    assert np.load(tmp_path / "q" / "model" / "queries.npy")[:, -1].tolist() == queries["area"].tolist()


def test_the_pretrained_embedding_is_identified_by_its_weights_not_the_trained_model(tmp_path):
    from stages.backbones import DEFAULT_BACKBONE
    from stages.index.cache import net_identity
    from stages.model import build_student, pretrained_model, save_model

    meta = {"backbone": DEFAULT_BACKBONE, "n_heads": 1, "teacher_dim": 8, "embed_dim": 4, "input_size": 16}
    identities = []
    for seed in (0, 1):  # two trained models of one backbone
        torch.manual_seed(seed)
        save_model(tmp_path / f"{seed}.pt", build_student(DEFAULT_BACKBONE, 1, 8, 4, 16, pretrained=False), meta)
        base = pretrained_model(meta)
        identities.append({n: net_identity(n, base, tmp_path / f"{seed}.pt") for n in ("model", "pretrained")})
    assert identities[0]["model"] != identities[1]["model"]
    assert identities[0]["pretrained"] == identities[1]["pretrained"]
    other = build_student(DEFAULT_BACKBONE, 0, 8, 4, 16, pretrained=False)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert net_identity("pretrained", other, tmp_path / "0.pt") != identities[0]["pretrained"]
