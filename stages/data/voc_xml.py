"""Pascal VOC annotations: ImageSets lists and per-image XML files (read with ElementTree).

A VOC root (e.g. ``VOCdevkit/VOC2007``) holds ``Annotations/<name>.xml``,
``ImageSets/Main/<set>.txt`` (one image name per line) and ``JPEGImages/<name>.jpg``.
VOC boxes are 1-based inclusive pixel indices; they become COCO ``[x, y, w, h]`` with
``x = xmin - 1``, ``w = xmax - xmin + 1`` (the convention of the VOC devkit and detectron2).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from stages.tables import DatasetError

#: VOC class names whose COCO spelling differs; the other 14 are spelled the same.
VOC_TO_COCO_NAME: dict[str, str] = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def read_image_set(voc_root: Path, name: str) -> list[str]:
    """Image names of ``ImageSets/Main/<name>.txt`` (first token of each non-empty line)."""
    path = voc_root / "ImageSets" / "Main" / f"{name}.txt"
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: expected the VOC image set list '{name}' (one image name per line) "
            "under voc_root/ImageSets/Main/"
        )
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _number(node: ET.Element | None, tag: str, path: Path) -> float:
    text = node.findtext(tag) if node is not None else None
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: expected a number in <{tag}>, got {text!r}") from None


def read_annotation(path: Path) -> tuple[str, int, int, list[tuple[str, bool, float, float, float, float]]]:
    """(image file name, width, height, [(class, difficult, x, y, w, h), ...]) of one XML file."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(
            f"{path} not found: expected the VOC annotation of a listed image under voc_root/Annotations/"
        ) from None
    except ET.ParseError as exc:
        raise DatasetError(f"{path} is not valid XML ({exc}): expected a VOC annotation") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: no <size> element: expected a VOC annotation with width and height")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if not name:
            raise DatasetError(f"{path}: an <object> without <name>")
        difficult = (obj.findtext("difficult") or "0").strip() not in ("", "0")
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: object '{name}' has no <bndbox>")
        x1, y1 = _number(bb, "xmin", path), _number(bb, "ymin", path)
        x2, y2 = _number(bb, "xmax", path), _number(bb, "ymax", path)
        objects.append((name, difficult, x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1))
    filename = (root.findtext("filename") or "").strip()
    return filename, width, height, objects


def read_voc(voc_root: Path, set_names: list[str], progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images and objects of the union of VOC image sets (each image once, in list order).

    images: ``name, file (JPEGImages/<filename>), width, height``; objects: ``name (image),
    cls (VOC class), difficult, x, y, w, h`` in COCO xywh pixels.
    """
    names: list[str] = []
    seen: set[str] = set()
    for s in set_names:
        for n in read_image_set(voc_root, s):
            if n not in seen:
                seen.add(n)
                names.append(n)
    ann_dir, jpg_dir = voc_root / "Annotations", voc_root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DatasetError(f"{ann_dir} not found: expected the VOC XML annotations under voc_root/Annotations/")
    img_rows, obj_rows = [], []
    for n in tqdm(names, desc=f"VOC {'+'.join(set_names)}", unit="xml", disable=not progress):
        filename, w, h, objects = read_annotation(ann_dir / f"{n}.xml")
        img_rows.append((n, str(jpg_dir / (filename or f"{n}.jpg")), w, h))
        obj_rows.extend((n, *o) for o in objects)
    images = pd.DataFrame(img_rows, columns=["name", "file", "width", "height"])
    objects = pd.DataFrame(obj_rows, columns=["name", "cls", "difficult", "x", "y", "w", "h"])
    return images, objects
