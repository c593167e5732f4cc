"""Resumable extraction: an interrupted run, rerun, gives the rows and ids of an uninterrupted one
without extracting the images of its completed shards again."""

import json

import numpy as np
import pandas as pd
import pytest

from stages.config import ExtractParams
from stages.extract import extract_tables
from stages.extract.resume import MANIFEST, extract_fingerprint
from stages.extract.sam import SamExtractor
from stages.shards import read_objects, shard_paths
from tests.extract.tiny_sam import TINY_BUILDERS, TINY_PARAMS, save_tiny_checkpoint


class Interrupted(Exception):
    pass


class Counting:
    """Wraps an extractor, counts its calls and raises after ``fail_after`` of them (a crash)."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.name, self.fail_after, self.calls = inner, inner.name, fail_after, 0

    def propose(self, image):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Interrupted
        self.calls += 1
        return self.inner.propose(image)


class Blobs:
    """A deterministic stand-in extractor: 0-3 boxes from the image's pixel sum."""

    name = "blobs"

    def propose(self, image):
        n = int(image.sum()) % 4
        h, w = image.shape[:2]
        boxes = np.array([[i, i, w - 2 * i, h - i] for i in range(n)], dtype=np.float64)
        return boxes, np.linspace(1, 0.5, n)


def all_rows(directory, splits=("train", "test")):
    return pd.concat([read_objects(directory, s) for s in splits], ignore_index=True)


def listed_images(directory):
    manifest = json.loads((directory / MANIFEST).read_text())
    return {i for rec in manifest["splits"].values() for s in rec["shards"] for i in s["images"]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def test_sam_resume_after_interruption_matches_uninterrupted_run(tmp_path, scenes, checkpoint):
    images = scenes(7, bad=(2,))
    tables = {"train": images.iloc[:4], "test": images.iloc[4:]}
    cfg = ExtractParams(extractor="sam", crop_size=16, shard_rows=8, sam={"checkpoint": checkpoint, **TINY_PARAMS})
    sam = SamExtractor(cfg.sam, builders=TINY_BUILDERS)

    whole = Counting(sam)
    ref_summary = extract_tables(tables, tmp_path / "ref", whole, cfg, "fp")
    assert whole.calls == 6  # 7 images, one unreadable
    reference = all_rows(tmp_path / "ref")
    assert len(shard_paths(tmp_path / "ref", "train")) >= 2  # several shards: resume points exist

    out = tmp_path / "objects"
    crashing = Counting(sam, fail_after=4)  # dies on the 5th readable image (in the test split)
    with pytest.raises(Interrupted):
        extract_tables(tables, out, crashing, cfg, "fp")
    done = listed_images(out)
    assert set(tables["train"]["image_id"]) <= done  # train completed, test partly
    assert not list(out.glob("*.tmp")) and not (out / "summary.json").exists()

    resumed = Counting(sam)
    summary = extract_tables(tables, out, resumed, cfg, "fp")
    readable_left = [i for i, p in zip(images["image_id"], images["path"]) if i not in done and not p.endswith(".jpg")]
    assert 0 < resumed.calls == len(readable_left) < 6  # completed images are not extracted again
    pd.testing.assert_frame_equal(all_rows(out), reference)
    assert summary == ref_summary

    again = Counting(sam)
    extract_tables(tables, out, again, cfg, "fp")  # a complete run: nothing to do
    assert again.calls == 0
    pd.testing.assert_frame_equal(all_rows(out), reference)


def test_interrupted_blobs_resume_with_stray_files(tmp_path, scenes):
    images = scenes(9, bad=(4,))
    tables = {"train": images.iloc[:5], "test": images.iloc[5:]}
    cfg = ExtractParams(crop_size=8, shard_rows=2)
    extract_tables(tables, tmp_path / "ref", Blobs(), cfg, "fp")
    reference = all_rows(tmp_path / "ref")

    out = tmp_path / "objects"
    with pytest.raises(Interrupted):
        extract_tables(tables, out, Counting(Blobs(), fail_after=3), cfg, "fp")
    assert listed_images(out)  # some shards were completed before the crash
    # a crash between a shard's rename and the manifest update, and a half-written shard
    stray = out / "train-00042.parquet"
    stray.write_bytes((tmp_path / "ref" / "train-00000.parquet").read_bytes())
    (out / "train-00043.parquet.tmp").write_bytes(b"partial")
    extract_tables(tables, out, Blobs(), cfg, "fp")
    assert not stray.exists() and not list(out.glob("*.tmp"))
    pd.testing.assert_frame_equal(all_rows(out), reference)


def test_changed_fingerprint_starts_over(tmp_path, scenes):
    images = scenes(4)
    out = tmp_path / "objects"
    cfg = ExtractParams(crop_size=8, shard_rows=1)
    extract_tables({"train": images}, out, Blobs(), cfg, "one")
    counting = Counting(Blobs())
    extract_tables({"train": images}, out, counting, cfg, "two")
    assert counting.calls == 4


def test_fingerprint_covers_results_not_the_engine(tmp_path):
    table = tmp_path / "train.json"
    table.write_text('{"images": []}')
    base = extract_fingerprint(ExtractParams(), [table])
    assert extract_fingerprint(ExtractParams(crop_size=32), [table]) != base
    assert extract_fingerprint(ExtractParams(sam={"device": "cpu"}), [table]) == base
    table.write_text('{"images": [1]}')
    assert extract_fingerprint(ExtractParams(), [table]) != base
