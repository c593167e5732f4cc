"""The embedding cache: the gallery vectors of the last index run, reused for unchanged objects.

When a photo folder grows, the index stage must not embed the old gallery again.  After each run,
``.cache/embeddings/<backbone>/<dataset>/<embedding>/`` holds that run's gallery: ``keys.npy``
(``[n, 2]`` int64: object id and a 64-bit hash of the object's crop bytes), the vector shards
(hard links to the index output's ``gallery-NNNNN.npy``, copies across file systems) and
``key.json``, the identity of the embedding (SHA-256 of ``model.pt`` for the trained model, of
the backbone's weights for ``pretrained``; embedding name, input size, batch size).  The next run
with the same identity takes the vector of every object whose (id, crop hash) it finds, and
embeds only the others, per embedding: a retrained model re-embeds the gallery with the model
only, not with the unchanged pretrained backbone.

* **Correct by construction**: a vector is reused only for the same net and the same crop
  bytes under the same object id, so a re-extraction, a resumed or older objects folder (ids
  given again to other crops) or a retrained model can never get a stale vector.
* **Outside DVC** (like ``models/<backbone>/checkpoint.pt``): the index output stays a plain DVC
  out; a fresh clone has no cache and embeds everything once.  A cached vector is the one computed
  when the object was first embedded; a fresh run batches crops differently, so vectors may differ
  from it in the last float bits (the default synthetic run, embedded from scratch, is unchanged).
* The cache is replaced, not grown: it always holds exactly the last run's gallery.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages.atomic import save_npy, write_text
from stages.vectors.shards import shard_rows, vector_shards

log = logging.getLogger(__name__)

__all__ = ["EmbeddingCache", "embedding_key", "net_identity", "object_keys", "save_cache"]

KEY_FILE = "key.json"
KEYS_FILE = "keys.npy"


def object_keys(chunk: pd.DataFrame) -> np.ndarray:
    """``[n, 2]`` int64 keys of a shard chunk: object id and a 64-bit hash of its crop bytes
    (``pandas.util.hash_array``: deterministic, vectorised in C)."""
    crops = pd.util.hash_array(np.asarray(chunk["crop"].to_numpy(), dtype=object), categorize=False)
    return np.stack([chunk["object_id"].to_numpy(np.int64), crops.view(np.int64)], axis=1)


def embedding_key(identity: str, embedding: str, input_size: int, batch_size: int) -> str:
    """The identity of an embedding: its net (:func:`net_identity`) and how crops are fed to it."""
    return json.dumps(
        {"model": identity, "embedding": embedding, "input_size": input_size, "batch_size": batch_size},
        sort_keys=True,
    )


def net_identity(embedding: str, net: torch.nn.Module, model_path: Path) -> str:
    """What an embedding's vectors depend on: for ``model``, the bytes of ``model.pt`` (weights and
    how it embeds: ``embed_head``, group boundaries); for ``pretrained``, the untrained net's
    weights, the same for every model trained from that backbone, so retraining reuses them."""
    if embedding != "pretrained":
        with open(model_path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "weights:" + h.hexdigest()


class EmbeddingCache:
    """The vectors of one embedding's last run (empty when absent or of another identity)."""

    EMPTY: EmbeddingCache  # a cache that holds nothing

    def __init__(self, directory: Path, key: str):
        self.directory = Path(directory)
        self.paths: list[Path] = []
        self.index = pd.MultiIndex.from_arrays([np.zeros(0, np.int64), np.zeros(0, np.int64)])
        try:
            if json.loads((self.directory / KEY_FILE).read_text()) != json.loads(key):
                log.info("index: embedding cache %s is of another model; not used", self.directory)
                return
            keys = np.load(self.directory / KEYS_FILE)
            paths = vector_shards(self.directory, "gallery")
            if int(shard_rows(paths).sum()) != len(keys):
                return
        except (OSError, ValueError):
            return
        self.paths = paths
        self.starts = np.concatenate([[0], np.cumsum(shard_rows(paths))])
        self.index = pd.MultiIndex.from_arrays([keys[:, 0], keys[:, 1]])
        if not self.index.is_unique:  # cannot happen for one run's gallery; never guess
            self.paths, self.index = [], self.index[:0]

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Cache row of each key (``-1``: not cached)."""
        if not len(self.index) or not len(keys):
            return np.full(len(keys), -1, np.int64)
        return self.index.get_indexer(pd.MultiIndex.from_arrays([keys[:, 0], keys[:, 1]])).astype(np.int64)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The cached vectors of ``rows`` (all >= 0), in that order."""
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        parts = {}
        for s in np.unique(shard_of):  # one memory map per shard, not per row
            m = shard_of == s
            parts[s] = (m, np.load(self.paths[s], mmap_mode="r")[rows[m] - self.starts[s]])
        dim = next(iter(parts.values()))[1].shape[1] if parts else 0
        out = np.empty((len(rows), dim), np.float32)
        for m, vectors in parts.values():
            out[m] = vectors
        return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links
        shutil.copyfile(src, dst)


def save_cache(directory: Path, key: str, keys: np.ndarray, shards: list[Path]) -> None:
    """Make ``directory`` the cache of this run: its keys and vector shards (swapped in whole)."""
    directory = Path(directory)
    new = directory.with_name(directory.name + ".new")
    old = directory.with_name(directory.name + ".old")
    for stale in (new, old):
        shutil.rmtree(stale, ignore_errors=True)
    new.mkdir(parents=True)
    for path in shards:
        _link_or_copy(path, new / path.name)
    save_npy(new / KEYS_FILE, np.ascontiguousarray(keys, np.int64))
    write_text(new / KEY_FILE, key + "\n")
    if directory.exists():
        directory.rename(old)
    new.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


EmbeddingCache.EMPTY = EmbeddingCache(Path("/nonexistent/embedding-cache"), "{}")
