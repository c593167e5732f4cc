"""What feeds a training step and a refresh: the training crops, in memory or streamed from the shards.

Two sources give the same uint8 crops ``[b, 3, S, S]`` (each crop decoded and resized by
:func:`stages.crops.tensors.decode_to_tensor`), hence the same batches and the same model:

* :class:`ShardCrops` reads each asked crop from the Parquet shards by id (object id -> shard,
  row group, row: :mod:`stages.shards.by_id`) and decodes it; it holds 8 bytes per crop.
* :class:`MemoryCrops` holds every decoded crop (``3 S²`` bytes each); :func:`training_crops`
  builds it, shard by shard, when that fits ``train.cache_gb``.

:func:`batch_loader` turns a list of index batches into a ``torch.utils.data.DataLoader`` whose
worker processes (``train.workers``) read and decode streamed crops ahead of the step (pinned
memory on CUDA, ``prefetch_factor`` batches per worker); the in-memory source loads in the main
process (an index_select). The order of the batches is the order asked, whatever the workers.

:class:`EmbeddingStore` holds a refresh's h and l of every embedded crop: float32 in memory when
that fits ``train.refresh_memory_gb``, else float16 files on disk mapped one chunk at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.crops.tensors import decode_to_tensor
from stages.shards.by_id import ShardLocations, ShardReader
from stages.vectors.rows import ArrayRows, MappedRows

log = logging.getLogger(__name__)
GB = 2**30
CACHE_CHUNK = 4096  # crops decoded per chunk while filling the in-memory cache


class MemoryCrops:
    """Decoded uint8 crops ``[N, 3, S, S]`` in memory."""

    def __init__(self, crops: torch.Tensor):
        self.crops = crops

    def __len__(self) -> int:
        return len(self.crops)

    def load(self, items: np.ndarray) -> torch.Tensor:
        return self.crops[torch.from_numpy(np.asarray(items, dtype=np.int64))]


class ShardCrops:
    """Crops read from the object shards by id and decoded at ``size`` (8 bytes per crop held)."""

    def __init__(self, locations: ShardLocations, size: int):
        self.locations, self.size = locations, size
        self.reader = ShardReader(locations, "crop")

    def __len__(self) -> int:
        return len(self.locations)

    def load(self, items: np.ndarray) -> torch.Tensor:
        return decode_to_tensor(self.reader.read(np.asarray(items, dtype=np.int64)), self.size)

    def decoded_bytes(self) -> int:
        return len(self) * 3 * self.size * self.size

    def to_memory(self, workers: int = 0) -> MemoryCrops:
        """Every crop decoded into one tensor, read in storage order (each row group once)."""
        out = torch.empty((len(self), 3, self.size, self.size), dtype=torch.uint8)
        order = self.locations.storage_order()
        chunks = [order[s : s + CACHE_CHUNK] for s in range(0, len(order), CACHE_CHUNK)]
        loader = batch_loader(self, chunks, workers, pin=False)
        for items, x in tqdm(zip(chunks, loader), total=len(chunks), desc="decode training crops", unit="chunk"):
            out[torch.from_numpy(items)] = x
        return MemoryCrops(out)


CropSource = MemoryCrops | ShardCrops


def as_source(crops) -> CropSource:
    """A tensor of decoded crops is an in-memory source; a source stays itself."""
    return MemoryCrops(crops) if isinstance(crops, torch.Tensor) else crops


def fits_in_memory(n: int, bytes_per_item: int, memory_gb: float) -> bool:
    """The cache rule: ``n`` items of ``bytes_per_item`` bytes are held in memory when they
    take at most ``memory_gb`` GiB."""
    return n * bytes_per_item <= memory_gb * GB


def training_crops(locations: ShardLocations, size: int, cache_gb: float, workers: int = 0) -> CropSource:
    """The crops of a run: decoded in memory when ``N * 3 * size²`` bytes fit ``cache_gb``, else
    streamed from the shards at every step (same crops, same batches either way)."""
    stream = ShardCrops(locations, size)
    if fits_in_memory(len(stream), 3 * size * size, cache_gb):
        return stream.to_memory(workers)
    log.info(
        "train: %d crops at %d px take %.1f GB decoded (> train.cache_gb %.1f): streamed from the shards",
        len(stream),
        size,
        stream.decoded_bytes() / GB,
        cache_gb,
    )
    return stream


class _Batches(Dataset):
    """Item i of the loader is the whole batch ``source.load(indices)`` (one call per batch)."""

    def __init__(self, source: CropSource):
        self.source = source

    def __getitem__(self, items: np.ndarray) -> torch.Tensor:
        return self.source.load(items)


def batch_loader(source: CropSource, batches: Iterable[np.ndarray], workers: int, pin: bool, prefetch: int = 2):
    """An iterator over ``source.load(b)`` for each index array ``b`` of ``batches``, in order.

    Streamed crops are read and decoded by ``workers`` processes ahead of use (``prefetch``
    batches each); in-memory crops are loaded in the main process. The DataLoader draws its
    worker seed from its own generator, never from the global RNG (the steps' draws stay those
    of a run without workers)."""
    if isinstance(source, MemoryCrops) or workers == 0:
        workers = 0
        return (_pinned(source.load(b)) if pin else source.load(b) for b in batches)
    return iter(
        DataLoader(
            _Batches(source),
            sampler=list(batches),
            batch_size=None,
            num_workers=workers,
            pin_memory=pin,
            prefetch_factor=prefetch,
            generator=torch.Generator().manual_seed(0),
        )
    )


def _pinned(x: torch.Tensor) -> torch.Tensor:
    return x.pin_memory()


@dataclass
class EmbeddingStore:
    """h and l of ``n`` embedded crops (row i: the i-th crop embedded), as row stores."""

    h: ArrayRows | MappedRows
    l: ArrayRows | MappedRows

    @property
    def in_memory(self) -> bool:
        return isinstance(self.h, ArrayRows)

    @staticmethod
    def create(n: int, dims: tuple[int, int], memory_gb: float, folder: Path | None, create: bool = True):
        """float32 in memory when ``n * (dh + dl) * 4`` bytes fit ``memory_gb`` (or no folder is
        given), else float16 files ``folder/h.f16``, ``folder/l.f16`` (``create``: make them)."""
        if folder is None or fits_in_memory(n, 4 * sum(dims), memory_gb):
            return EmbeddingStore(*(ArrayRows(np.zeros((n, d), np.float32)) for d in dims))
        return EmbeddingStore(*(MappedRows(Path(folder) / f"{k}.f16", (n, d), create) for k, d in zip("hl", dims)))


def chunked(items: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(items), size):
        yield items[s : s + size]
