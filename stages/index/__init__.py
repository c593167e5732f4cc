"""The index stage: embed the gallery objects and query boxes of a test split, build FAISS indexes.

Streamed (see :mod:`stages.index.build`): gallery crops are decoded and embedded
``index.chunk_rows`` at a time into embedding shards, and each index is built shard by shard
(:mod:`stages.vectors.faiss_index`).  Heavy imports (torch) happen in :func:`run` only, so the
evaluation can use the FAISS helpers of this package without loading a model.
"""

from __future__ import annotations

from stages import layout
from stages.config import Params

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("seed", "extract.crop_size", "index")


def run(params: Params, backbone: str, dataset: str) -> None:
    """Index the test gallery of ``dataset`` with the model of ``backbone`` (reusing the last run's
    embeddings of unchanged objects, :mod:`stages.index.cache`)."""
    from stages.crops import image_reader
    from stages.index.build import build_index_dir
    from stages.tables import load_split

    test = load_split(layout.dataset_dir(dataset) / "test.json")
    model = layout.model_dir(backbone) / "model.pt"
    build_index_dir(
        layout.index_dir(backbone, dataset),
        model,
        test,
        layout.objects_dir(dataset),
        params,
        cache_dir=layout.embedding_cache(backbone, dataset),
        reader=image_reader(dataset),
    )
