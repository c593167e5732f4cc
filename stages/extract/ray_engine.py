"""The Ray engine: a Ray Data pipeline that decodes images on CPU tasks and runs the extractor on
actors (one per GPU when the cluster has GPUs, CPU actors otherwise).

The driver receives one row per image, in table order (``preserve_order``), and the same
:func:`stages.extract.extraction.extract_split` as the local engine writes the shards and the
resume manifest: shards, object ids and resume behave exactly as with the local engine.  Ray Data
restarts a dead actor and retries its batch (its defaults ``max_restarts=-1``,
``max_task_retries=-1``), so a lost worker loses no image.

Connects to ``extract.ray_address`` or ``$RAY_ADDRESS`` when set (nodes need this project
installed; its ``stages`` package is shipped with the job), else starts a local cluster.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.config import ExtractParams
from stages.crops import read_image
from stages.errors import UserError
from stages.extract.local import ImageResult
from stages.extract.proposals import image_objects

log = logging.getLogger(__name__)

__all__ = ["ray_cluster", "ray_results"]

# Logical CPU share of a decode task; CPU extractor actors take the rest of their core, so both
# kinds fit on a node whose cores all host an actor.
_DECODE_CPUS = 0.1
_EMPTY = np.zeros((0, 0, 3), np.uint8)
_RESULT_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("path", pa.string()),
        ("ok", pa.bool_()),
        ("boxes", pa.list_(pa.float64())),  # flattened [n * 4]
        ("area", pa.list_(pa.float32())),
        ("scores", pa.list_(pa.float32())),
        ("stability", pa.list_(pa.float32())),
        ("masks", pa.list_(pa.string())),  # null when the extractor keeps no mask
        ("crops", pa.list_(pa.binary())),
    ]
)


@contextlib.contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None):
    """Use the running Ray session, else connect to ``address`` / ``$RAY_ADDRESS``, else start a
    local cluster (``num_cpus`` logical CPUs); a session started here is shut down on exit."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "extract.engine 'ray' needs Ray: pip install 'ray[data]' (or the project's [ray] extra)"
        ) from None

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"log_to_driver": False, "include_dashboard": False}
    if address:
        kwargs["address"] = address
        kwargs["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
    else:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _decode(row: dict, reader: Callable = read_image) -> dict:
    image = reader(row["path"])
    return {
        "image_id": row["image_id"],
        "path": row["path"],
        "ok": image is not None,
        "image": _EMPTY if image is None else image,
    }


class _ExtractActor:
    """Builds the extractor once per actor (a SAM model load) and extracts the images of each batch."""

    def __init__(self, factory: Callable, cfg: ExtractParams):
        self.extractor = factory()
        self.cfg = cfg

    def __call__(self, batch: dict) -> pa.Table:
        rows = {f.name: [] for f in _RESULT_SCHEMA}
        for image_id, path, ok, image in zip(batch["image_id"], batch["path"], batch["ok"], batch["image"]):
            objs = (
                image_objects(np.asarray(image), self.extractor, self.cfg.crop_size, self.cfg.crop_format)
                if ok
                else None
            )
            rows["image_id"].append(int(image_id))
            rows["path"].append(str(path))
            rows["ok"].append(bool(ok))
            rows["boxes"].append(objs["boxes"].reshape(-1).tolist() if ok else [])
            for key in ("area", "scores", "stability"):
                rows[key].append(np.asarray(objs[key], np.float32).tolist() if ok else [])
            rows["masks"].append(objs["masks"] if ok else None)
            rows["crops"].append(objs["crops"] if ok else [])
        return pa.table(rows, schema=_RESULT_SCHEMA)


def _actor_class(factory: Callable, cfg: ExtractParams) -> type:
    """The actor class with its constructor arguments bound (shipped with the class, so a restarted
    actor never depends on an object-store argument)."""

    class ExtractActor(_ExtractActor):
        def __init__(self):
            super().__init__(factory, cfg)

    return ExtractActor


def _to_result(row: dict) -> ImageResult:
    if not row["ok"]:
        return ImageResult(row["image_id"], row["path"], None)
    objects = {
        "boxes": np.asarray(row["boxes"], np.float64).reshape(-1, 4),
        "area": np.asarray(row["area"], np.float32),
        "scores": np.asarray(row["scores"], np.float32),
        "stability": np.asarray(row["stability"], np.float32),
        "masks": row["masks"],
        "crops": row["crops"],
    }
    return ImageResult(row["image_id"], row["path"], objects)


def ray_results(
    images: pd.DataFrame,
    factory: Callable,
    cfg: ExtractParams,
    workers: int | None = None,
    batch_size: int = 1,
    reader: Callable = read_image,
) -> Iterator[ImageResult]:
    """Extract the images of the table on the Ray cluster; results come back in table order.

    ``factory()`` builds the extractor in each actor; ``workers`` actors (default: one per GPU of
    the cluster, else one per CPU).  Must run inside :func:`ray_cluster` (or a Ray session)."""
    import ray

    if images.empty:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    fit = gpus or max(1, min(int(cpus), int((cpus - _DECODE_CPUS) // (1 - _DECODE_CPUS))))  # room on the cluster
    n_actors = workers or fit
    if n_actors > fit:
        log.warning("extract: %d Ray workers asked, the cluster has room for %d; using %d", n_actors, fit, fit)
        n_actors = fit
    actor_resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1 - _DECODE_CPUS}
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # captured when the dataset is created
    try:
        items = [{"image_id": int(i), "path": str(p)} for i, p in zip(images["image_id"], images["path"])]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), max(1, n_actors * 4)))
        ds = ds.map(functools.partial(_decode, reader=reader), num_cpus=_DECODE_CPUS)
        ds = ds.map_batches(
            _actor_class(factory, cfg),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            **actor_resources,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                yield _to_result(row)
    finally:
        ctx.execution_options.preserve_order = before
