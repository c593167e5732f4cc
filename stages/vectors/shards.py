"""Embedding shards: a gallery's vectors as ``.npy`` chunks, written as they are computed.

A gallery larger than memory never exists as one array: the index stage appends each embedded
chunk as ``<prefix>-NNNNN.npy`` (written to a temporary file and renamed, so a crash never leaves
a partial shard that looks complete), and index building reads the shards one at a time through
memory maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stages.atomic import save_npy

__all__ = ["VectorShardWriter", "vector_shards", "iter_vector_chunks", "shard_rows", "sample_rows"]


def _shard_path(directory: Path, prefix: str, index: int) -> Path:
    return Path(directory) / f"{prefix}-{index:05d}.npy"


class VectorShardWriter:
    """Appends float32 ``[n, d]`` chunks as consecutive ``<prefix>-NNNNN.npy`` shards."""

    def __init__(self, directory: Path, prefix: str = "gallery"):
        self.directory = Path(directory)
        self.prefix = prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in vector_shards(self.directory, prefix):  # a rerun replaces the previous shards
            stale.unlink()
        self.paths: list[Path] = []
        self.rows = 0
        self.dim: int | None = None

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected [n, d] vectors, got shape {vectors.shape}")
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ValueError(f"chunk has dimension {vectors.shape[1]}, earlier chunks {self.dim}")
        self.dim = vectors.shape[1]
        path = _shard_path(self.directory, self.prefix, len(self.paths))
        save_npy(path, vectors)
        self.paths.append(path)
        self.rows += vectors.shape[0]


def vector_shards(directory: Path, prefix: str = "gallery") -> list[Path]:
    """Completed shards, in row order."""
    return sorted(Path(directory).glob(f"{prefix}-[0-9][0-9][0-9][0-9][0-9].npy"))


def shard_rows(paths: list[Path]) -> np.ndarray:
    """Rows of each shard, read from the ``.npy`` headers only."""
    return np.array([np.load(p, mmap_mode="r").shape[0] for p in paths], dtype=np.int64)


def iter_vector_chunks(paths: list[Path]) -> Iterator[np.ndarray]:
    """Each shard as a float32 array, one at a time."""
    for p in paths:
        yield np.ascontiguousarray(np.load(p, mmap_mode="r"), dtype=np.float32)


def sample_rows(paths: list[Path], n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct rows drawn uniformly over all shards (all rows when there are fewer), in row order."""
    rows = shard_rows(paths)
    total = int(rows.sum())
    n = min(int(n), total)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    starts = np.concatenate([[0], np.cumsum(rows)])
    shard_of = np.searchsorted(starts, picked, side="right") - 1
    parts = []
    for s in np.unique(shard_of):  # one memory map per shard, not per row
        local = picked[shard_of == s] - starts[s]
        parts.append(np.asarray(np.load(paths[s], mmap_mode="r")[local], dtype=np.float32))
    if not parts:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(parts)
