"""The Ray engine on a local 2-CPU cluster: same rows as the local engine, resumable."""

import contextlib
import functools

import pandas as pd
import pytest
import ray

from stages.config import ExtractParams
from stages.extract import build_extractor, extract_tables, extract_tables_ray
from stages.extract.extraction import extract_dataset
from stages.extract.ray_engine import ray_results
from stages.extract.sam import SamExtractor
from stages.shards import read_objects
from tests.extract.tiny_sam import TINY_BUILDERS, TINY_PARAMS, save_tiny_checkpoint


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Interrupted(Exception):
    pass


def rows(directory, splits):
    return pd.concat([read_objects(directory, s) for s in splits], ignore_index=True)


def test_graph_on_ray_resumes_and_matches_local(cluster, tmp_path, scenes):
    images = scenes(5, bad=(1,))
    tables = {"train": images}  # one split: each split is a Ray Data run (seconds of actor start-up)
    cfg = ExtractParams(crop_size=8, shard_rows=15, engine="ray", ray_workers=2)
    extract_tables(tables, tmp_path / "local", build_extractor(cfg), cfg, "fp")
    local = rows(tmp_path / "local", tables)

    asked = []

    def on_ray(fail_after=None):
        def engine(todo):  # the driver dies after receiving `fail_after` images from the cluster
            asked.append(len(todo))
            results = ray_results(todo, functools.partial(build_extractor, cfg), cfg, workers=cfg.ray_workers)
            with contextlib.closing(results):
                for i, result in enumerate(results):
                    if i == fail_after:
                        raise Interrupted
                    yield result

        return engine

    out = tmp_path / "ray"
    with pytest.raises(Interrupted):
        extract_dataset(tables, out, on_ray(fail_after=2), "graph", cfg, "fp")
    summary = extract_dataset(tables, out, on_ray(), "graph", cfg, "fp")  # resumes on the same cluster
    assert asked == [5, 4]  # the image of the shard completed before the crash was not sent again
    assert summary["splits"]["train"]["skipped_images"] == 1
    pd.testing.assert_frame_equal(rows(out, tables), local)


def test_tiny_sam_on_ray_matches_local(cluster, tmp_path, scenes):
    images = scenes(3)
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pth")
    cfg = ExtractParams(
        extractor="sam", crop_size=8, engine="ray", sam={"checkpoint": checkpoint, "keep_masks": True, **TINY_PARAMS}
    )
    factory = functools.partial(SamExtractor, cfg.sam, builders=TINY_BUILDERS)
    extract_tables({"test": images}, tmp_path / "local", factory(), cfg, "fp")
    extract_tables_ray({"test": images}, tmp_path / "ray", cfg, "fp", factory=factory)
    local, remote = rows(tmp_path / "local", ["test"]), rows(tmp_path / "ray", ["test"])
    assert len(local) > 0 and remote["mask_rle"].notna().all()
    pd.testing.assert_frame_equal(remote, local, check_exact=False, atol=1e-5)
