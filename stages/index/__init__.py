"""The index stage: embed the gallery objects and query boxes of a test split, build FAISS indexes.

Streamed (see :mod:`stages.index.build`): gallery crops are decoded and embedded
``index.chunk_rows`` at a time into embedding shards, and each index is built shard by shard
(:mod:`stages.index.faiss_index`).  Heavy imports (torch) happen in :func:`run` only, so the
evaluation can use the FAISS helpers of this package without loading a model.
"""

from __future__ import annotations

from stages import layout
from stages.config import Params

EMBEDDINGS = ("model", "pretrained")


def run(params: Params) -> None:
    from stages.data.table import load_split
    from stages.index.build import build_index_dir

    build_index_dir(layout.INDEX, layout.MODELS / "model.pt", load_split(layout.DATASET / "test.json"), layout.OBJECTS, params)
