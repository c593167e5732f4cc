"""Embedding many crops with a model in batches, and reading shards chunk by chunk."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def embed_tensor(
    embed: Callable[..., torch.Tensor],
    crops: torch.Tensor,
    batch: int,
    desc: str | None = None,
    areas: np.ndarray | None = None,
) -> np.ndarray:
    """Embed uint8 crops [N, 3, S, S] in batches with ``embed`` (float [0,1] input) -> float32 [N, d];
    with ``areas`` (each crop's box area, pixels) ``embed`` is called as ``embed(x, areas)``."""
    chunks = []
    starts = range(0, len(crops), batch)
    for s in tqdm(starts, desc=desc, unit="batch", disable=desc is None or len(starts) < 2):
        x = crops[s : s + batch].float().div_(255)
        out = embed(x) if areas is None else embed(x, torch.as_tensor(areas[s : s + batch]))
        chunks.append(out.float().cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def iter_encoded_chunks(paths: Sequence, columns: list[str], rows: int):
    """Parquet object shards as DataFrame chunks of at most ``rows`` rows (``crop`` bytes included)."""
    import pyarrow.parquet as pq

    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns):
            yield batch.to_pandas()


def embed_chunk(nets: Sequence, crops: torch.Tensor, batch: int, areas: np.ndarray) -> list[np.ndarray]:
    """One chunk of uint8 crops through each of ``nets`` (their ``embed``), decoded once for all;
    ``areas``: each crop's box area in its image (pixels), for a net that routes by scale group."""
    areas = np.array(areas, dtype=np.float64)  # a writable copy (a pandas column may be read-only)
    return [
        embed_tensor(net.embed, crops, batch, areas=areas if getattr(net, "routed", False) else None) for net in nets
    ]
