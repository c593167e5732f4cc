"""The extraction manifest: which shards are complete and which images they cover, so a killed
extraction resumes where it stopped.

``<objects_dir>/manifest.json`` (written atomically after each completed shard) lists per split
the completed shards in order, each with the ids of all images it covers (images with objects,
images with no object and unreadable images) and the next free object id after it.  Shard files
that the manifest does not list (a shard renamed just before a crash) and ``*.tmp`` files are
deleted when a run starts.  A fingerprint of the extraction parameters and the dataset tables is
stored too: when it differs, the directory is cleared and extraction starts over.

**Incremental** datasets (photo folders) leave the tables out of the fingerprint: each shard also
lists the ``signature`` (size:mtime_ns) of each image it covers, and a rerun on a changed folder
drops the objects of removed or modified images from their shards and extracts only the images
no shard covers (:mod:`stages.extract.extraction`).  Object ids are never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stages.atomic import write_text
from stages.config import ExtractParams
from stages.shards import shard_paths

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
_VERSION = 1
# Parameters that change how the work is run, not its result: a change keeps what is extracted.
_RUN_ONLY = {"engine", "ray_address", "ray_workers", "workers"}
_SAM_RUN_ONLY = {"device"}


def extract_fingerprint(cfg: ExtractParams, dataset_files: list[Path], incremental: bool = False) -> str:
    """Hash of the result-relevant extract params and of the dataset tables' bytes (only their
    split names when ``incremental``: images are then followed one by one, by signature)."""
    params = cfg.model_dump(mode="json")
    for key in _RUN_ONLY:
        params.pop(key, None)
    for key in _SAM_RUN_ONLY:
        params.get("sam", {}).pop(key, None)
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    if incremental:
        h.update(b"incremental")
    for path in dataset_files:
        h.update(Path(path).name.encode())
        if not incremental:
            h.update(Path(path).read_bytes())
    return h.hexdigest()


@dataclass
class ShardRecord:
    file: str | None  # None: images without any object after the split's last shard
    rows: int
    images: list[int]
    skipped: list[str]
    next_object_id: int
    signatures: list[str] | None = None  # incremental datasets: each image's signature, as ``images``


@dataclass
class SplitRecord:
    shards: list[ShardRecord] = field(default_factory=list)
    complete: bool = False

    def done_images(self) -> set[int]:
        return {i for s in self.shards for i in s.images}

    def next_shard_index(self) -> int:
        """One past the highest shard number listed (shards emptied by removals leave gaps)."""
        return 1 + max((int(s.file.rsplit("-", 1)[1].split(".")[0]) for s in self.shards if s.file), default=-1)

    def signatures(self) -> dict[int, str]:
        """``image id -> signature`` of the images covered (incremental datasets)."""
        return {i: g for s in self.shards for i, g in zip(s.images, s.signatures or [])}


@dataclass
class Manifest:
    fingerprint: str
    splits: dict[str, SplitRecord] = field(default_factory=dict)

    def split(self, name: str) -> SplitRecord:
        return self.splits.setdefault(name, SplitRecord())

    def next_object_id(self, order: list[str], split: str) -> int:
        """First free object id of ``split``: after its last shard, else after the splits before it."""
        for name in reversed(order[: order.index(split) + 1]):
            rec = self.splits.get(name)
            if rec and rec.shards:
                return rec.shards[-1].next_object_id
        return 0

    def save(self, directory: Path) -> None:
        data = {
            "version": _VERSION,
            "fingerprint": self.fingerprint,
            "splits": {k: _record_dict(v) for k, v in self.splits.items()},
        }
        write_text(Path(directory) / MANIFEST, json.dumps(data) + "\n")

    @classmethod
    def read(cls, directory: Path) -> "Manifest | None":
        try:
            data = json.loads((Path(directory) / MANIFEST).read_text())
            if data.get("version") != _VERSION:
                return None
            splits = {
                k: SplitRecord(shards=[ShardRecord(**s) for s in v["shards"]], complete=bool(v["complete"]))
                for k, v in data["splits"].items()
            }
            return cls(fingerprint=str(data["fingerprint"]), splits=splits)
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _record_dict(rec: SplitRecord) -> dict:
    data = asdict(rec)
    for shard in data["shards"]:
        if shard["signatures"] is None:  # non-incremental datasets: the manifest of before
            del shard["signatures"]
    return data


def open_manifest(directory: Path, fingerprint: str, splits: list[str]) -> Manifest:
    """The manifest to continue from: the stored one when its fingerprint matches (stray shards
    and temporary files removed), else a fresh one in a cleared directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.read(directory)
    listed = set()
    if manifest is not None and manifest.fingerprint == fingerprint:
        listed = {s.file for rec in manifest.splits.values() for s in rec.shards if s.file}
        if any(not (directory / f).is_file() for f in listed):
            log.warning("extract: a shard listed in %s is missing; starting over", directory / MANIFEST)
            manifest = None
    elif manifest is not None:
        log.info("extract: parameters or dataset changed since the last run; starting over")
        manifest = None
    if manifest is None:
        manifest, listed = Manifest(fingerprint=fingerprint), set()
    stale = [p for split in splits for p in shard_paths(directory, split) if p.name not in listed]
    stale += list(directory.glob("*.tmp"))
    if not listed:
        stale += [p for p in (directory / MANIFEST, directory / SUMMARY) if p.exists()]
    for path in stale:
        path.unlink()
    if listed:
        done = sum(len(rec.done_images()) for rec in manifest.splits.values())
        log.info("extract: resuming: %d shards and %d images already done", len(listed), done)
    return manifest
