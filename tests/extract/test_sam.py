"""The SAM extractor with a tiny random SAM: the real checkpoint loading and mask generator on CPU."""

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from stages.config import ExtractParams, SamParams
from stages.extract import extract_tables
from stages.extract.sam import AutocastEncoder, SamCheckpointError, SamExtractor, load_sam
from stages.shards import OBJECT_SCHEMA, read_objects, shard_paths
from tests.extract.tiny_sam import TINY_BUILDERS, TINY_PARAMS, build_tiny_sam, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_vit_b.pth")


def sam_cfg(checkpoint, **sam):
    return ExtractParams(
        extractor="sam", crop_size=16, shard_rows=40, sam={"checkpoint": checkpoint, **TINY_PARAMS, **sam}
    )


def test_shards_hold_sam_objects_with_stability_and_masks(tmp_path, scenes, checkpoint):
    images = scenes(3, bad=(1,))
    cfg = sam_cfg(checkpoint, keep_masks=True)
    extractor = SamExtractor(cfg.sam, builders=TINY_BUILDERS)
    summary = extract_tables({"train": images}, tmp_path / "objects", extractor, cfg, "fp")
    s = summary["splits"]["train"]
    assert s["images"] == 2 and s["skipped_images"] == 1 and s["skipped"][0].endswith("bad1.jpg")
    df = read_objects(tmp_path / "objects", "train")
    assert len(df) == s["objects"] > 0 and set(df["image_id"]) == {100, 102}
    import pyarrow.parquet as pq

    assert pq.read_schema(shard_paths(tmp_path / "objects", "train")[0]).equals(OBJECT_SCHEMA)
    assert (df["extractor"] == "sam").all() and df["object_id"].tolist() == list(range(len(df)))
    assert df["score"].between(-1, 2).all() and df["stability"].between(0, 1).all()
    for row in df.itertuples():
        h, w = (48, 64) if row.image_id == 100 else (64, 64)
        assert 0 <= row.x1 < row.x2 <= w and 0 <= row.y1 < row.y2 <= h
        rle = json.loads(row.mask_rle)
        assert rle["size"] == [h, w]
        mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        ys, xs = np.nonzero(mask)
        # the box is the mask's half-open pixel extent; the RLE's area is the mask's pixel count
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (row.x1, row.y1, row.x2, row.y2)
        assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum() > 0
        assert row.area == (row.x2 - row.x1) * (row.y2 - row.y1) >= mask.sum()


def test_masks_are_null_unless_kept(tmp_path, scenes, checkpoint):
    cfg = sam_cfg(checkpoint)
    extractor = SamExtractor(cfg.sam, builders=TINY_BUILDERS)
    extract_tables({"test": scenes(1)}, tmp_path / "objects", extractor, cfg, "fp")
    df = read_objects(tmp_path / "objects", "test")
    assert len(df) > 0 and df["mask_rle"].isna().all() and df["stability"].notna().all()


def test_missing_checkpoint_names_file_and_model_type(tmp_path):
    with pytest.raises(SamCheckpointError, match=r"not found: .*nope\.pth.*vit_b"):
        load_sam("vit_b", tmp_path / "nope.pth", TINY_BUILDERS)
    with pytest.raises(SamCheckpointError, match=r"extract\.sam\.checkpoint is not set.*vit_h"):
        SamExtractor(SamParams())


def test_checkpoint_of_another_model_type_is_named(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "wide.pth", model_type="vit_l")  # width 48, depth 2
    with pytest.raises(SamCheckpointError) as err:
        load_sam("vit_b", path, TINY_BUILDERS)
    msg = str(err.value)
    assert "wide.pth is not a SAM vit_b checkpoint" in msg
    assert "width 32, depth 1" in msg and "width 48, depth 2" in msg and "model_type" in msg


def test_real_registry_names_the_released_model_types(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "tiny.pth")
    with pytest.raises(
        SamCheckpointError, match=r"not a SAM vit_h checkpoint: vit_h has image encoder width 1280, depth 32 \(vit_h\)"
    ):
        load_sam("vit_h", path)  # segment-anything's registry, built on the meta device only


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(SamCheckpointError, match=r"cannot read .*bad\.pth as a SAM vit_b checkpoint"):
        load_sam("vit_b", bad, TINY_BUILDERS)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": build_tiny_sam()}, pickled)  # a whole module: refused by weights_only
    with pytest.raises(SamCheckpointError, match="pickled.pth"):
        load_sam("vit_b", pickled, TINY_BUILDERS)


def test_autocast_encoder_returns_fp32():
    encoder = build_tiny_sam().image_encoder
    wrapped = AutocastEncoder(encoder, "cpu", torch.bfloat16)
    x = torch.randn(1, 3, 64, 64)
    out = wrapped(x)
    assert out.dtype == torch.float32 and wrapped.img_size == 64
    assert torch.allclose(out, encoder(x), atol=0.1)
