"""The extract stage: class-agnostic object proposals of every image into Parquet shards.

Extractors share one interface, ``propose(image RGB uint8) -> Proposals`` (or a plain
``(boxes xyxy [N,4], scores [N])`` pair), and are looked up by name in :data:`EXTRACTORS`.
Extraction is resumable (:mod:`stages.extract.extraction`): rerunning after a crash keeps the
completed shards and extracts only the images they do not cover.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from stages import layout
from stages.config import SOURCES, ExtractParams, Params
from stages.crops import image_reader, read_image
from stages.errors import InputError, MissingInputError
from stages.extract.extraction import Engine, extract_dataset
from stages.extract.local import default_workers, local_results
from stages.extract.proposals import Proposals, image_objects
from stages.extract.resume import extract_fingerprint
from stages.tables import load_split

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("extract",)

__all__ = ["EXTRACTORS", "Extractor", "build_extractor", "image_objects", "extract_tables", "extract_tables_ray", "run"]


class Extractor(Protocol):
    """``name`` is stored with each object; an extractor with a true ``processes`` attribute may
    run in worker processes of the local engine (``extract.workers``), others in this process."""

    name: str

    def propose(self, image: np.ndarray) -> Proposals | tuple[np.ndarray, np.ndarray]: ...


def _graph(cfg: ExtractParams) -> Extractor:
    from stages.extract.graph import GraphExtractor

    return GraphExtractor(cfg.graph)


def _sam(cfg: ExtractParams) -> Extractor:
    from stages.extract.sam import SamExtractor

    return SamExtractor(cfg.sam)


EXTRACTORS: dict[str, Callable[[ExtractParams], Extractor]] = {"graph": _graph, "sam": _sam}


def build_extractor(cfg: ExtractParams) -> Extractor:
    try:
        builder = EXTRACTORS[cfg.extractor]
    except KeyError:
        raise InputError(f"unknown extractor {cfg.extractor!r}; valid: {sorted(EXTRACTORS)}") from None
    return builder(cfg)


def extract_tables(
    tables: dict,
    objects_dir: Path,
    extractor: Extractor,
    cfg: ExtractParams,
    fingerprint: str,
    engine: Engine | None = None,
    reader: Callable = read_image,
    incremental: bool = False,
) -> dict:
    """Extract the images of ``tables`` (split -> DataFrame with ``image_id, path``) into
    ``objects_dir`` with the local engine (or ``engine``); returns the summary.  ``reader(path)``
    decodes an image; ``incremental``: follow a changed table image by image (photo folders)."""
    workers = (cfg.workers or default_workers()) if getattr(extractor, "processes", False) else 1
    engine = engine or functools.partial(local_results, extractor=extractor, cfg=cfg, reader=reader, workers=workers)
    return extract_dataset(tables, objects_dir, engine, extractor.name, cfg, fingerprint, incremental)


def extract_tables_ray(
    tables: dict,
    objects_dir: Path,
    cfg: ExtractParams,
    fingerprint: str,
    factory: Callable | None = None,
    reader: Callable = read_image,
    incremental: bool = False,
) -> dict:
    """:func:`extract_tables` on a Ray cluster (``cfg.ray_address``, ``$RAY_ADDRESS`` or a local
    one); ``factory()`` builds the extractor in each actor (default: from ``cfg``)."""
    from stages.extract.ray_engine import ray_cluster, ray_results

    factory = factory or functools.partial(build_extractor, cfg)
    engine = functools.partial(ray_results, factory=factory, cfg=cfg, workers=cfg.ray_workers, reader=reader)
    with ray_cluster(cfg.ray_address):
        return extract_dataset(tables, objects_dir, engine, cfg.extractor, cfg, fingerprint, incremental)


def run(params: Params, dataset: str) -> None:
    """Extract the objects of every split of ``dataset`` into ``data/<dataset>/objects/`` (resumable;
    incremental for a photo folder: only new or changed images are extracted)."""
    name = dataset
    cfg = params.extract
    splits = layout.dataset_splits(name)
    if not splits:
        raise MissingInputError(f"no dataset tables in {layout.dataset_dir(name)}; run the data stage")
    files = [layout.dataset_dir(name) / f"{split}.json" for split in splits]
    tables = {split: load_split(f).images for split, f in zip(splits, files)}
    incremental = SOURCES[name].photos  # a photo folder changes: update, do not start over
    fingerprint = extract_fingerprint(cfg, files, incremental)
    out = layout.objects_dir(name)
    reader = image_reader(name)
    if cfg.engine == "ray":
        extract_tables_ray(tables, out, cfg, fingerprint, reader=reader, incremental=incremental)
    else:
        extract_tables(tables, out, build_extractor(cfg), cfg, fingerprint, reader=reader, incremental=incremental)
