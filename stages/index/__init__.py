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


def run(params: Params, backbone: str | None = None, dataset: str | None = None) -> None:
    """Index the test gallery of ``dataset`` with the model of ``backbone`` (defaults: train_on, first backbone)."""
    from stages.data.table import load_split
    from stages.index.build import build_index_dir

    backbone, dataset = params.backbone(backbone), params.dataset(dataset)
    test = load_split(layout.dataset_dir(dataset) / "test.json")
    model = layout.model_dir(backbone) / "model.pt"
    build_index_dir(layout.index_dir(backbone, dataset), model, test, layout.objects_dir(dataset), params)
