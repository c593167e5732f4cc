"""The local engine: images decoded in a background thread while the extractor runs on the previous one."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from stages.config import ExtractParams
from stages.crops import read_image
from stages.extract.proposals import image_objects

__all__ = ["ImageResult", "local_results", "prefetch_images"]


@dataclass(frozen=True)
class ImageResult:
    """The extraction of one image: ``objects`` are the columns of :func:`image_objects`, None when
    the image could not be read."""

    image_id: int
    path: str
    objects: dict | None


def prefetch_images(
    images: pd.DataFrame, depth: int = 2, reader: Callable = read_image
) -> Iterator[tuple[int, str, np.ndarray | None]]:
    """Yield ``(image_id, path, RGB image or None)`` in table order, decoding up to ``depth`` images
    ahead in a thread (OpenCV and Pillow release the GIL while decoding); ``reader(path)`` decodes
    (``stages.data.image_reader`` of the dataset)."""
    rows = iter(zip(images["image_id"].tolist(), images["path"].tolist()))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        queue: deque = deque()

        def submit() -> None:
            row = next(rows, None)
            if row is not None:
                queue.append((row, pool.submit(reader, row[1])))

        for _ in range(max(1, depth)):
            submit()
        try:
            while queue:
                (image_id, path), future = queue.popleft()
                submit()
                yield int(image_id), str(path), future.result()
        finally:
            for _, future in queue:
                future.cancel()


def local_results(
    images: pd.DataFrame, extractor, cfg: ExtractParams, reader: Callable = read_image
) -> Iterator[ImageResult]:
    """Extract every image of the table in this process, in table order."""
    for image_id, path, image in prefetch_images(images, reader=reader):
        objects = None if image is None else image_objects(image, extractor, cfg.crop_size, cfg.crop_format)
        yield ImageResult(image_id, path, objects)
