"""The local engine: one machine, images extracted in table order.

With one worker the extractor runs in this process while a background thread decodes the next
images. With more (a CPU extractor such as ``graph`` on a multi-core machine), a pool of worker
processes decodes and extracts whole images, a few in flight per worker, and the results come
back in table order, so the shards are identical whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from stages.config import ExtractParams
from stages.crops import read_image
from stages.extract.proposals import image_objects

__all__ = ["ImageResult", "local_results", "prefetch_images", "default_workers"]


@dataclass(frozen=True)
class ImageResult:
    """The extraction of one image: ``objects`` are the columns of :func:`image_objects`, None when
    the image could not be read."""

    image_id: int
    path: str
    objects: dict | None


def default_workers() -> int:
    """The CPU cores this process may use (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _ordered(pool: Executor, rows: Iterator, submit: Callable, depth: int) -> Iterator[tuple[tuple, object]]:
    """``(row, result)`` of ``submit(pool, row)`` for every row, in order, ``depth`` in flight."""
    queue: deque[tuple[tuple, Future]] = deque()

    def more() -> None:
        row = next(rows, None)
        if row is not None:
            queue.append((row, submit(pool, row)))

    for _ in range(max(1, depth)):
        more()
    try:
        while queue:
            row, future = queue.popleft()
            more()
            yield row, future.result()
    finally:
        for _, future in queue:
            future.cancel()


def _rows(images: pd.DataFrame) -> Iterator[tuple[int, str]]:
    return ((int(i), str(p)) for i, p in zip(images["image_id"].tolist(), images["path"].tolist()))


def prefetch_images(
    images: pd.DataFrame, depth: int = 2, reader: Callable = read_image
) -> Iterator[tuple[int, str, np.ndarray | None]]:
    """Yield ``(image_id, path, RGB image or None)`` in table order, decoding up to ``depth`` images
    ahead in a thread (OpenCV and Pillow release the GIL while decoding); ``reader(path)`` decodes
    (``stages.data.image_reader`` of the dataset)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        for (image_id, path), image in _ordered(pool, _rows(images), lambda p, row: p.submit(reader, row[1]), depth):
            yield image_id, path, image


IMAGES_PER_WORKER = 16  # the fewest images that make one more worker process worth starting
# the extractor of a worker process, set once by its initializer
_WORKER: dict = {}


def _init_worker(extractor, cfg: ExtractParams, reader: Callable) -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)  # one image per process: the processes share the cores
    torch.set_num_threads(1)
    _WORKER.update(extractor=extractor, cfg=cfg, reader=reader)


def _extract_file(path: str) -> dict | None:
    image = _WORKER["reader"](path)
    if image is None:
        return None
    cfg = _WORKER["cfg"]
    return image_objects(image, _WORKER["extractor"], cfg.crop_size, cfg.crop_format)


def local_results(
    images: pd.DataFrame, extractor, cfg: ExtractParams, reader: Callable = read_image, workers: int = 1
) -> Iterator[ImageResult]:
    """Extract every image of the table on this machine, in table order; ``workers > 1``: in that
    many processes (``extractor``, ``cfg`` and ``reader`` must pickle), fewer on a short table: a
    process pays for its start-up (seconds of imports) only over a few dozen images."""
    workers = min(workers, len(images) // IMAGES_PER_WORKER)
    if workers <= 1:
        for image_id, path, image in prefetch_images(images, reader=reader):
            objects = None if image is None else image_objects(image, extractor, cfg.crop_size, cfg.crop_format)
            yield ImageResult(image_id, path, objects)
        return
    # spawn, not fork: the parent may hold torch/OpenMP thread pools that a forked child would inherit broken
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, context, _init_worker, (extractor, cfg, reader)) as pool:
        try:
            for (image_id, path), objects in _ordered(
                pool, _rows(images), lambda p, row: p.submit(_extract_file, row[1]), 3 * workers
            ):
                yield ImageResult(image_id, path, objects)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
