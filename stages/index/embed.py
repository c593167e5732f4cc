"""Crops to tensors, and embedding many crops with a model in batches."""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from stages.extract.crops import decode_crop


def crops_to_tensor(crops: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 crops of any shape -> uint8 tensor [N, 3, size, size] (stretched to square)."""
    out = np.empty((len(crops), size, size, 3), dtype=np.uint8)
    for i, c in enumerate(crops):  # per-crop resize: image I/O, not maths
        interp = cv2.INTER_AREA if max(c.shape[:2]) > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(c, (size, size), interpolation=interp)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode_to_tensor(encoded: Sequence[bytes], size: int) -> torch.Tensor:
    """Encoded crops (shard ``crop`` column) -> uint8 tensor [N, 3, size, size]."""
    return crops_to_tensor([decode_crop(b) for b in encoded], size)


@torch.no_grad()
def embed_tensor(
    embed: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor, batch: int, desc: str | None = None
) -> np.ndarray:
    """Embed uint8 crops [N, 3, S, S] in batches with ``embed`` (float [0,1] input) -> float32 [N, d]."""
    chunks = []
    starts = range(0, len(crops), batch)
    for s in tqdm(starts, desc=desc, unit="batch", disable=desc is None or len(starts) < 2):
        chunks.append(embed(crops[s : s + batch].float().div_(255)).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def iter_encoded_chunks(paths: Sequence, columns: list[str], rows: int):
    """Parquet object shards as DataFrame chunks of at most ``rows`` rows (``crop`` bytes included)."""
    import pyarrow.parquet as pq

    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns):
            yield batch.to_pandas()


def embed_chunk(nets: Sequence, crops: torch.Tensor, batch: int) -> list[np.ndarray]:
    """One chunk of uint8 crops through each of ``nets`` (their ``embed``), decoded once for all."""
    return [embed_tensor(net.embed, crops, batch) for net in nets]
