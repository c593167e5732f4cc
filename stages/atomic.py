"""Atomic writes: every output is written to ``<name>.tmp`` beside it and renamed when complete.

A crash, a kill or a full disk never leaves a truncated file under the final name, so a stage
that is rerun (or resumed) never mistakes a partial output for a finished one. One helper per
format, all over :func:`atomic_path`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the block succeeds.

    The parent folder is created. On an exception the temporary file is removed and ``path``
    keeps its previous content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """``data`` as JSON (a trailing newline, keys in insertion order)."""
    write_text(path, json.dumps(data, indent=indent) + "\n")


def write_parquet(path: str | os.PathLike, table) -> None:
    """A pandas DataFrame (index dropped) or a pyarrow Table as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def save_npy(path: str | os.PathLike, array) -> None:
    """``np.save`` of one array (the file keeps the exact name given, no ``.npy`` added)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` of a state (model file, checkpoint)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_figure(path: str | os.PathLike, fig, **kwargs) -> None:
    """A matplotlib figure as an image file (the format is the one of ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


def write_image(path: str | os.PathLike, rgb) -> None:
    """An RGB ``uint8`` array as an image file (format from ``path``'s suffix, via OpenCV)."""
    import cv2

    suffix = Path(path).suffix or ".png"
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image of shape {getattr(rgb, 'shape', '?')} as {suffix}")
    write_bytes(path, buf.tobytes())
