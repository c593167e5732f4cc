"""The streamed data path: crops read from the shards in DataLoader workers give the same batches
and the same model as the in-memory cache; a killed streamed run resumes to the same result."""

import numpy as np
import pytest
import torch

from stages.backbones import DEFAULT_BACKBONE
from stages.config import TrainParams
from stages.crops.images import encode_crop
from stages.crops.tensors import decode_to_tensor
from stages.shards import ShardWriter, objects_table
from stages.shards.by_id import locate
from stages.train.data import (
    EmbeddingStore,
    MemoryCrops,
    PackedCrops,
    ShardCrops,
    batch_loader,
    pack_crops,
    training_crops,
)
from stages.train.loop import RunFiles, TrainingSet, resolve_train_params, train_model

N = 24
CFG = TrainParams(
    method="ms_ugcml",
    steps=6,
    queries=2,
    neighbours=3,
    knn_refresh=4,
    input_size=32,
    embed_dim=16,
    teacher_dim=32,
    checkpoint_every=1,
    batch_embed=8,
    ema=0.9,
    clusters=3,
    mix_share=0.5,
    workers=2,
)
GROUPS = np.arange(N) % 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """N crops of different sizes as PNG in two shards (ids 100, 102, ...), and their locations."""
    folder = tmp_path_factory.mktemp("objects")
    rng = np.random.default_rng(0)
    writer = ShardWriter(folder, "train", 12)
    ids = 100 + 2 * np.arange(N)
    for lo in range(0, N, 4):
        part = ids[lo : lo + 4]
        crops = [encode_crop(rng.integers(0, 256, (int(rng.integers(20, 48)), 40, 3), dtype=np.uint8)) for _ in part]
        zeros = {c: np.zeros(len(part), np.float32) for c in ("x1", "y1", "x2", "y2", "area", "score")}
        writer.add(
            objects_table(
                {"object_id": part, "image_id": part, "split": ["train"] * 4, **zeros, "crop": crops}
                | {"extractor": ["t"] * 4}
            )
        )
    writer.close()
    return folder, ids


def _train(tmp_path, crops, cfg=CFG, stop_after=None):
    tmp_path.mkdir(exist_ok=True)
    return train_model(
        resolve_train_params(cfg, DEFAULT_BACKBONE, None),
        TrainingSet(crops, GROUPS, 3),
        RunFiles(tmp_path / "ckpt.pt", tmp_path / "log.tsv", "fp"),
        seed=0,
        stop_after=stop_after,
    )


def test_streamed_crops_are_the_cached_crops(tmp_path, shards):
    folder, ids = shards
    loc = locate(folder, "train", ids[::-1])  # any order: crop i is the i-th id asked
    stream = ShardCrops(loc, 32)
    cached = training_crops(loc, 32, cache_gb=1.0)
    assert isinstance(cached, MemoryCrops) and isinstance(training_crops(loc, 32, cache_gb=0), ShardCrops)
    items = np.array([3, 0, 17, 3, 23])
    assert torch.equal(stream.load(items), cached.load(items))
    expected = decode_to_tensor(stream.reader.read(np.arange(N)), 32)
    assert torch.equal(cached.crops, expected)
    batches = [np.array([1, 2, 3]), np.array([20, 0]), np.array([5])]
    got = list(batch_loader(stream, batches, workers=2, pin=False))  # worker processes, in order
    assert [torch.equal(g, expected[b]) for g, b in zip(got, batches)] == [True] * 3
    packed = training_crops(loc, 32, cache_gb=0, pack_folder=tmp_path / "pack")
    assert isinstance(packed, PackedCrops) and len(packed) == N
    assert torch.equal(packed.load(items), cached.load(items))
    got = list(batch_loader(packed, batches, workers=2, pin=False))
    assert [torch.equal(g, expected[b]) for g, b in zip(got, batches)] == [True] * 3


def test_packed_crops_are_reused_for_the_same_crops_and_repacked_for_others(tmp_path, shards):
    folder, ids = shards
    pack = tmp_path / "pack"
    first = pack_crops(ShardCrops(locate(folder, "train", ids), 32), pack)
    written = (pack / "crops.bin").stat().st_mtime_ns
    again = pack_crops(ShardCrops(locate(folder, "train", ids), 32), pack)
    assert (pack / "crops.bin").stat().st_mtime_ns == written
    assert torch.equal(first.load(np.arange(N)), again.load(np.arange(N)))
    (pack / "packed.json").write_text("{broken")  # an interrupted pack is redone
    redone = pack_crops(ShardCrops(locate(folder, "train", ids), 32), pack)
    assert torch.equal(redone.load(np.arange(N)), first.load(np.arange(N)))
    fewer = pack_crops(ShardCrops(locate(folder, "train", ids[:5]), 32), pack)  # other crops: packed anew
    assert len(fewer) == 5 and torch.equal(fewer.load(np.arange(5)), first.load(np.arange(5)))
    waiting = pack_crops(ShardCrops(locate(folder, "train", ids[:5]), 32), pack, rank=1, wait_s=0.01)
    assert torch.equal(waiting.load(np.arange(5)), fewer.load(np.arange(5)))  # a rank > 0 only waits


def test_streamed_run_with_workers_equals_the_in_memory_run_and_resumes(tmp_path, shards):
    """Same batches and the same model from the packed crops (2 workers) as from the cache; a run killed
    inside a period (pending batches in the checkpoint) resumes to the same weights and log."""
    folder, ids = shards
    loc = locate(folder, "train", ids)
    cached = training_crops(loc, CFG.input_size, cache_gb=1.0)
    full = _train(tmp_path / "memory", cached, CFG.model_copy(update={"workers": 0}))
    packed = tmp_path / "stream" / "ckpt.crops"
    partial = _train(tmp_path / "stream", training_crops(loc, CFG.input_size, 0, pack_folder=packed), stop_after=3)
    ckpt = torch.load(tmp_path / "stream" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["pending"].shape == (1, CFG.queries * CFG.neighbours)
    resumed = _train(tmp_path / "stream", training_crops(loc, CFG.input_size, 0, pack_folder=packed))
    assert partial.resumed_from == 0 and resumed.resumed_from == 3
    for (k, a), (_, b) in zip(full.student.state_dict().items(), resumed.student.state_dict().items()):
        assert torch.equal(a, b), k
    assert (tmp_path / "memory" / "log.tsv").read_text() == (tmp_path / "stream" / "log.tsv").read_text()
    assert not (tmp_path / "stream" / "ckpt.refresh").exists()  # the refresh scratch files are gone


def test_refresh_on_disk_in_float16_trains_and_a_share_of_each_group(tmp_path, shards):
    folder, ids = shards
    loc = locate(folder, "train", ids)
    cfg = CFG.model_copy(update={"refresh_memory_gb": 0.0, "refresh_share": 0.5, "steps": 2, "workers": 0})
    res = _train(tmp_path, ShardCrops(loc, CFG.input_size), cfg)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    active = ckpt["method"]["active"]
    assert [len(a) for a in active] == [4, 4, 4]  # half of each group of 8
    assert all((GROUPS[a.numpy()] == g).all() for g, a in enumerate(active))
    assert len(res.student.heads) == 3


def test_embedding_store_rule(tmp_path):
    small = EmbeddingStore.create(10, (4, 2), memory_gb=1.0, folder=tmp_path)
    big = EmbeddingStore.create(10, (4, 2), memory_gb=0.0, folder=tmp_path)
    assert small.in_memory and not big.in_memory
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    big.h.write(0, x[:6])
    big.h.write(6, x[6:])
    assert (tmp_path / "h.f16").stat().st_size == 10 * 4 * 2
    assert np.allclose(big.h.take(np.array([9, 0, 3])), x[[9, 0, 3]], atol=1e-2)
    assert np.allclose(np.concatenate([c for _, c in big.h.chunks(4)]), x, atol=1e-2)
