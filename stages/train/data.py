"""What feeds a training step and a refresh: the training crops, in memory or streamed.

Three sources give the same uint8 crops ``[b, 3, S, S]`` (each crop decoded and resized by
:func:`stages.crops.tensors.decode_to_tensor`), hence the same batches and the same model:

* :class:`ShardCrops` reads each asked crop from the Parquet shards by id (object id -> shard,
  row group, row: :mod:`stages.shards.by_id`) and decodes it; it holds 8 bytes per crop. Random
  access this way parses a shard's footer (~17 MB for 50,000 rows) at each file it opens, so it
  serves sequential reads: filling the two sources below.
* :class:`MemoryCrops` holds every decoded crop (``3 S²`` bytes each); :func:`training_crops`
  builds it, shard by shard, when that fits ``train.cache_gb``.
* :class:`PackedCrops`, above ``train.cache_gb``: the run's encoded crops copied once, in storage
  order, into one file beside the checkpoint (:func:`pack_crops`); a step reads each crop with
  one ``os.pread`` of its bytes (16 bytes per crop held, memory-mapped).

:func:`batch_loader` turns a list of index batches into a ``torch.utils.data.DataLoader`` whose
worker processes (``train.workers``) read and decode streamed crops ahead of the step (pinned
memory on CUDA, ``prefetch_factor`` batches per worker); the in-memory source loads in the main
process (an index_select). The order of the batches is the order asked, whatever the workers.

:class:`EmbeddingStore` holds a refresh's h and l of every embedded crop: float32 in memory when
that fits ``train.refresh_memory_gb``, else float16 files on disk mapped one chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.atomic import save_npy, write_json
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
        chunks = list(chunked(order, CACHE_CHUNK))
        loader = batch_loader(self, chunks, workers, pin=False)
        for items, x in tqdm(zip(chunks, loader), total=len(chunks), desc="decode training crops", unit="chunk"):
            out[torch.from_numpy(items)] = x
        return MemoryCrops(out)


class PackedCrops:
    """Encoded crops packed by :func:`pack_crops` in ``folder``: ``crops.bin`` (the bytes, one
    crop after the other) and ``spans.npy`` (int64 ``[N, 2]``: where crop i starts and ends,
    memory-mapped). Pickles without its open file and map (a DataLoader worker opens its own)."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = Path(folder), size
        self._spans: np.ndarray | None = None
        self._fd: int | None = None

    def __getstate__(self):
        return {"folder": self.folder, "size": self.size, "_spans": None, "_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @property
    def spans(self) -> np.ndarray:
        if self._spans is None:
            self._spans = np.load(self.folder / "spans.npy", mmap_mode="r")
        return self._spans

    def __len__(self) -> int:
        return len(self.spans)

    def load(self, items: np.ndarray) -> torch.Tensor:
        if self._fd is None:
            self._fd = os.open(self.folder / "crops.bin", os.O_RDONLY)
        spans = self.spans[np.asarray(items, dtype=np.int64)]
        data = [os.pread(self._fd, int(end - start), int(start)) for start, end in spans.tolist()]  # I/O per crop
        return decode_to_tensor(data, self.size)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


PACKED = "packed.json"  # written last: the pack is complete and of these crops


def _pack_identity(locations: ShardLocations) -> str:
    """The shards (name, size, modification time) and the selection (shard, row of every crop)."""
    digest = hashlib.sha256()
    for p in locations.paths:
        st = os.stat(p)
        digest.update(f"{Path(p).name}:{st.st_size}:{st.st_mtime_ns};".encode())
    digest.update(np.ascontiguousarray(locations.shard).tobytes())
    digest.update(np.ascontiguousarray(locations.row).tobytes())
    return digest.hexdigest()


def pack_crops(stream: ShardCrops, folder: Path, rank: int = 0, wait_s: float = 1.0) -> PackedCrops:
    """The crops of ``stream`` packed into ``folder`` (kept, and reused by a resumed run of the same
    crops): read once in storage order (each row group once), written one after the other.

    Disk: the encoded bytes of the selected crops. Under torchrun rank 0 packs; the other ranks
    wait for its ``packed.json`` (``folder`` must be on a file system every rank sees)."""
    folder = Path(folder)
    key = _pack_identity(stream.locations)
    marker = folder / PACKED

    def complete() -> bool:
        try:
            return json.loads(marker.read_text())["crops"] == key
        except (OSError, ValueError, KeyError):
            return False

    if rank != 0:
        while not complete():
            time.sleep(wait_s)
        return PackedCrops(folder, stream.size)
    if complete():
        log.info("train: reusing the packed crops in %s", folder)
        return PackedCrops(folder, stream.size)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spans = np.zeros((len(stream), 2), dtype=np.int64)
    order = stream.locations.storage_order()
    pos = 0
    with open(folder / "crops.bin", "wb") as f:
        for items in tqdm(list(chunked(order, CACHE_CHUNK)), desc="pack training crops", unit="chunk"):
            data = stream.reader.read(items)
            ends = pos + np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)))
            spans[items, 0] = np.concatenate([[pos], ends[:-1]])
            spans[items, 1] = ends
            pos = int(ends[-1])
            f.write(b"".join(data))
    save_npy(folder / "spans.npy", spans)
    write_json(marker, {"crops": key, "count": len(stream), "bytes": pos})
    return PackedCrops(folder, stream.size)


CropSource = MemoryCrops | ShardCrops | PackedCrops


def as_source(crops) -> CropSource:
    """A tensor of decoded crops is an in-memory source; a source stays itself."""
    return MemoryCrops(crops) if isinstance(crops, torch.Tensor) else crops


def fits_in_memory(n: int, bytes_per_item: int, memory_gb: float) -> bool:
    """The cache rule: ``n`` items of ``bytes_per_item`` bytes are held in memory when they
    take at most ``memory_gb`` GiB."""
    return n * bytes_per_item <= memory_gb * GB


def training_crops(
    locations: ShardLocations,
    size: int,
    cache_gb: float,
    workers: int = 0,
    pack_folder: Path | None = None,
    rank: int = 0,
) -> CropSource:
    """The crops of a run: decoded in memory when ``N * 3 * size²`` bytes fit ``cache_gb``, else
    packed into ``pack_folder`` and streamed from there at every step (from the shards when no
    folder is given); the same crops and batches either way."""
    stream = ShardCrops(locations, size)
    if fits_in_memory(len(stream), 3 * size * size, cache_gb):
        return stream.to_memory(workers)
    log.info(
        "train: %d crops at %d px take %.1f GB decoded (> train.cache_gb %.1f): streamed, %s",
        len(stream),
        size,
        stream.decoded_bytes() / GB,
        cache_gb,
        "from the shards" if pack_folder is None else f"packed in {pack_folder}",
    )
    return stream if pack_folder is None else pack_crops(stream, pack_folder, rank)


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
