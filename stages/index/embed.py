"""Embedding many crops with a model in batches, and reading shards chunk by chunk."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm


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
