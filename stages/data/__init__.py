"""The data stage: materialise a dataset (synthetic, coco_voc, coco, images, lvis, visual_genome,
belgalogos) as COCO-format tables."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from stages import layout
from stages.atomic import write_json
from stages.config import Params
from stages.data.coco_json import write_dataset
from stages.errors import InputError

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("seed", "data.{dataset}")

#: Dataset sources: synthetic (embedded default), the paper's COCO+VOC benchmark, the
#: evaluation-only generalisation sets (one ``test`` split each) and the user's own data: any
#: COCO-format file (``coco``) or a folder of photos without labels (``images``).
SOURCES = ("synthetic", "coco_voc", "lvis", "visual_genome", "belgalogos", "coco", "images")

__all__ = ["PARAMS", "SOURCES", "build_dataset", "run", "write_dataset"]


def _synthetic(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import synthetic

    cfg = params.data.synthetic
    sizes = {"train": cfg.train_images, "test": cfg.test_images}
    return {s: synthetic.generate_split(cfg, s, n, params.seed, out_dir) for s, n in sizes.items()}


def _coco_voc(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import coco_voc

    return coco_voc.build(params.data.coco_voc, params.seed)


def _lvis(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import lvis

    return lvis.build(params.data.lvis, params.seed)


def _visual_genome(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import visual_genome

    return visual_genome.build(params.data.visual_genome, params.seed)


def _belgalogos(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import belgalogos

    return belgalogos.build(params.data.belgalogos, params.seed)


def _coco(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import coco

    return coco.build(params.data.coco, params.seed)


def _images(params: Params, out_dir: Path) -> dict[str, dict]:
    from stages.data import images

    splits, report = images.build(params.data.images, out_dir)
    write_json(out_dir / layout.DATASET_REPORT, report)
    log.info(
        "data: images: %d of %d files kept, %d unreadable, %d exact duplicates (%s), %d EXIF-rotated",
        report["images"],
        report["files"],
        report["unreadable"],
        report["duplicate_files"],
        "dropped" if report["duplicates_dropped"] else "kept",
        report["exif_rotated"],
    )
    return splits


_BUILDERS: dict[str, Callable[[Params, Path], dict[str, dict]]] = {
    "synthetic": _synthetic,
    "coco_voc": _coco_voc,
    "lvis": _lvis,
    "visual_genome": _visual_genome,
    "belgalogos": _belgalogos,
    "coco": _coco,
    "images": _images,
}


def build_dataset(name: str, params: Params, out_dir: str | Path) -> dict[str, dict]:
    """``{split: COCO dict}`` of dataset ``name`` configured by ``params.data.<name>``.

    Real datasets are referenced in place (absolute ``file_name``); only the synthetic
    source writes images (under ``out_dir/images/``, file names relative to ``out_dir``).
    Splits: synthetic and coco ``train, test``; coco_voc ``train, val, test``; the others ``test``
    (for ``images``, the one table that is both gallery and training set).
    """
    if name not in _BUILDERS:
        raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(SOURCES)}")
    return _BUILDERS[name](params, Path(out_dir))


def run(params: Params, dataset: str) -> None:
    """Write ``data/<dataset>/dataset/{split}.json`` (and the images of generated sources)."""
    name = dataset
    out = layout.dataset_dir(name)
    splits = build_dataset(name, params, out)
    write_dataset(splits, out)
    for split, coco in splits.items():
        queries = sum(1 for a in coco["annotations"] if a.get("query", True))
        log.info(
            "data: %s/%s: %d images, %d boxes (%d queries), %d classes",
            name,
            split,
            len(coco["images"]),
            len(coco["annotations"]),
            queries,
            len(coco["categories"]),
        )
