"""Row stores of embeddings that need not fit in memory: read chunk by chunk, or a few rows at once.

:class:`ArrayRows` wraps an in-memory float32 array; :class:`MappedRows` is a float16 file on disk
mapped one window at a time (a window is unmapped when read, so the resident memory is one chunk,
not the file). Both give float32 rows. The train stage's refreshes write one (h and l of every
training crop) and the k-NN graph and the centroids read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK_ROWS = 65_536  # rows per window when a store is read chunk by chunk


class ArrayRows:
    """Rows of an in-memory ``[n, d]`` array (float32 copies of what is asked)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def __len__(self) -> int:
        return len(self.array)

    def write(self, lo: int, values: np.ndarray) -> None:
        self.array[lo : lo + len(values)] = values

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.array[rows], dtype=np.float32)

    def chunks(self, chunk: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, len(self), chunk):
            yield lo, np.ascontiguousarray(self.array[lo : lo + chunk], dtype=np.float32)


class MappedRows:
    """Rows of a float16 ``[n, d]`` file (no header), mapped one window at a time."""

    dtype = np.dtype(np.float16)

    def __init__(self, path: Path, shape: tuple[int, int], create: bool = False):
        self.path, self._shape = Path(path), (int(shape[0]), int(shape[1]))
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:
                f.truncate(self._shape[0] * self._shape[1] * self.dtype.itemsize)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def __len__(self) -> int:
        return self._shape[0]

    def _window(self, lo: int, hi: int, mode: str) -> np.memmap:
        d = self._shape[1]
        return np.memmap(self.path, self.dtype, mode, offset=lo * d * self.dtype.itemsize, shape=(hi - lo, d))

    def write(self, lo: int, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        window = self._window(lo, lo + len(values), "r+")
        window[:] = values
        window.flush()
        del window

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order) as float32, read window by window over the sorted rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self._shape[1]), dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        for lo in range(0, len(self), CHUNK_ROWS):
            a, b = np.searchsorted(sorted_rows, [lo, lo + CHUNK_ROWS])
            if a == b:
                continue
            window = self._window(lo, min(len(self), lo + CHUNK_ROWS), "r")
            out[order[a:b]] = window[sorted_rows[a:b] - lo]
            del window
        return out

    def chunks(self, chunk: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, len(self), chunk):
            window = self._window(lo, min(len(self), lo + chunk), "r")
            values = np.asarray(window, dtype=np.float32)
            del window
            yield lo, values
