"""The file listing of a photo folder (standard library only: the scan stage runs on every repro).

Each entry of ``data.images.paths`` is a folder (searched recursively), a glob pattern (``**``
allowed) or a file; files are kept by extension (case-insensitive).  Only ``stat`` is called:
``(path as listed, size, mtime_ns)`` per file, sorted by path.
"""

from __future__ import annotations

import glob
import json
import logging
import os

from stages.config import ImagesParams
from stages.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


def _walk(folder: str) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of every file under ``folder`` (recursive scandir, one stat each)."""
    found, stack = [], [folder]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                for e in it:
                    if e.is_dir():
                        stack.append(e.path)
                    elif e.is_file():
                        st = e.stat()
                        found.append((e.path, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            log.warning("images: cannot list %s (%s); skipped", top, exc)
    return found


def scan_files(cfg: ImagesParams) -> list[tuple[str, int, int]]:
    """The photo files of ``cfg.paths``: ``(path as listed, size, mtime_ns)``, sorted by path."""
    if not cfg.paths:
        raise InputError("data.images.paths is not set: expected folders or glob patterns of photos")
    rows: list[tuple[str, int, int]] = []
    for entry in cfg.paths:
        entry = os.path.normpath(os.path.expanduser(entry))
        if _GLOB_CHARS & set(entry):
            matches = [m for m in glob.glob(entry, recursive=True) if os.path.isfile(m)]
            if not matches:
                log.warning("images: pattern %s matches no file", entry)
            for m in matches:
                st = os.stat(m)
                rows.append((m, st.st_size, st.st_mtime_ns))
        elif os.path.isdir(entry):
            rows.extend(_walk(entry))
        elif os.path.isfile(entry):
            st = os.stat(entry)
            rows.append((entry, st.st_size, st.st_mtime_ns))
        else:
            raise MissingInputError(
                f"{entry} not found: expected a folder, file or glob pattern of photos (data.images)"
            )
    exts = tuple(cfg.extensions)
    unique = {r[0]: r for r in reversed(rows) if r[0].lower().endswith(exts)}  # first listing of a path wins
    return sorted(unique.values())


def listing_json(cfg: ImagesParams, files: list[tuple[str, int, int]]) -> str:
    """The scan stage's output: the parameters and one ``[path, size, mtime_ns]`` row per file.

    Its bytes change exactly when a file is added, removed, resized or modified (or the
    parameters change), which is all the data stage needs DVC to detect."""
    return json.dumps({"source": "images", "params": cfg.model_dump(mode="json"), "files": files}) + "\n"
