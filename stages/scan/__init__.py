"""The scan stage: the stat listing of a photo folder, so DVC follows the folder without hashing it.

dvc.yaml runs it on every ``dvc repro`` (``always_changed``) for the photo-folder datasets of
``watch``; the data stage depends on its output ``data/sources/<dataset>.json`` instead of on the
folder, so a no-op check costs one ``stat`` per file (no file is read, no pandas or torch import)
and a file that is added, removed or modified still reruns the data stage.  Other datasets'
data stages depend on a committed stub of the same name.
"""

from __future__ import annotations

import logging

from stages import layout
from stages.atomic import write_text
from stages.config import SOURCES, Params
from stages.errors import InputError
from stages.scan.listing import listing_json, scan_files

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("data.{dataset}",)

__all__ = ["PARAMS", "listing_json", "run", "scan_files"]


def run(params: Params, dataset: str) -> None:
    """Write the listing (path, size, mtime_ns of every photo) of ``dataset`` to ``data/sources/<dataset>.json``."""
    if dataset not in SOURCES or not SOURCES[dataset].photos:
        raise InputError(f"dataset {dataset!r} is not a photo folder: only photo-folder datasets (images) are scanned")
    cfg = getattr(params.data, dataset)
    files = scan_files(cfg)
    write_text(layout.source_file(dataset), listing_json(cfg, files))
    log.info("scan: %s: %d files (%.1f MB)", dataset, len(files), sum(f[1] for f in files) / 1e6)
