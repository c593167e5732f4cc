"""Writers of tiny datasets in the real on-disk formats (COCO, VOC, LVIS, Visual Genome, BelgaLogos).

Each writer returns what it wrote, so tests can compare the readers' output with it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

# The 80 COCO 2017 categories (ids as in instances_*2017.json).
COCO_CATEGORIES: list[tuple[int, str]] = [
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
]


def write_jpg(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def write_coco(
    root: Path,
    name: str,
    image_ids: list[int],
    boxes_per_image: list[int],
    crowd: set[int] = frozenset(),
    seed: int = 0,
) -> dict:
    """``root/annotations/instances_<name>.json`` + ``root/<name>/<id:012d>.jpg`` (COCO 2017 layout).

    Image k has ``boxes_per_image[k]`` boxes; annotation ids in ``crowd`` are crowd regions.
    """
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for iid, nb in zip(image_ids, boxes_per_image):
        w, h = int(rng.integers(48, 80)), int(rng.integers(40, 64))
        fname = f"{iid:012d}.jpg"
        write_jpg(root / name / fname, w, h, seed=iid)
        images.append(
            {
                "id": iid,
                "file_name": fname,
                "width": w,
                "height": h,
                "coco_url": f"http://images.cocodataset.org/{name}/{fname}",
            }
        )
        for _ in range(nb):
            aid = len(anns) + 1 + 100_000 * seed
            bw, bh = float(rng.integers(4, w // 2)), float(rng.integers(4, h // 2))
            x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
            cat = COCO_CATEGORIES[int(rng.integers(len(COCO_CATEGORIES)))][0]
            anns.append(
                {
                    "id": aid,
                    "image_id": iid,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(aid in crowd),
                    "segmentation": [],
                }
            )
    data = {
        "info": {},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_CATEGORIES],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(data))
    return data


def voc_xml(
    filename: str, width: int, height: int, objects: list[tuple[str, int, tuple[float, float, float, float]]]
) -> ET.ElementTree:
    """A VOC annotation: objects are (class, difficult, (xmin, ymin, xmax, ymax)) 1-based."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2007"
    ET.SubElement(ann, "filename").text = filename
    size = ET.SubElement(ann, "size")
    for tag, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for cls, difficult, (x1, y1, x2, y2) in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = cls
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(difficult)
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bb, tag).text = str(v)
    return ET.ElementTree(ann)


def write_voc(root: Path, sets: dict[str, list[int]], seed: int = 0) -> dict[str, tuple[int, int, list]]:
    """A VOC2007 folder: XML + JPEG per image number, ``ImageSets/Main/<set>.txt`` per set.

    Returns ``{name: (width, height, objects)}``; object classes cycle over the 20 VOC classes.
    """
    from stages.data.voc_xml import VOC_CLASSES

    rng = np.random.default_rng(seed)
    written = {}
    numbers = sorted({n for v in sets.values() for n in v})
    k = 0
    for n in numbers:
        name = f"{n:06d}"
        w, h = int(rng.integers(48, 80)), int(rng.integers(40, 64))
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            x1, y1 = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
            x2, y2 = int(rng.integers(x1 + 2, w + 1)), int(rng.integers(y1 + 2, h + 1))
            objects.append((VOC_CLASSES[k % 20], int(k % 5 == 4), (x1, y1, x2, y2)))
            k += 1
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        voc_xml(f"{name}.jpg", w, h, objects).write(root / "Annotations" / f"{name}.xml")
        write_jpg(root / "JPEGImages" / f"{name}.jpg", w, h, seed=n)
        written[name] = (w, h, objects)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for s, ns in sets.items():
        (root / "ImageSets" / "Main" / f"{s}.txt").write_text("".join(f"{n:06d}\n" for n in ns))
    return written
