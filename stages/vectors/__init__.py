"""Stored embeddings and their FAISS indexes: what the index stage writes and evaluate/search read.

* :mod:`stages.vectors.shards`: a gallery's vectors as ``.npy`` shards, written chunk by chunk;
* :mod:`stages.vectors.faiss_index`: FAISS index types (flat, IVF-PQ, HNSW), built shard by shard,
  loaded for search (GPU when present).

No model code here: reading an index needs FAISS and NumPy only.
"""
