"""Open-world Task1–Task4 class orders (paper Table IX) and known/unknown class sets."""

from __future__ import annotations

import numpy as np

N_TASKS = 4

# The ORE split of the paper's Table IX, as COCO category names; each task adds 20 classes.
COCO_ORE_TASKS: tuple[tuple[str, ...], ...] = (
    (
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "boat",
        "bird",
        "cat",
        "dog",
        "horse",
        "sheep",
        "cow",
        "bottle",
        "chair",
        "couch",
        "potted plant",
        "dining table",
        "tv",
    ),
    (
        "truck",
        "traffic light",
        "fire hydrant",
        "stop sign",
        "parking meter",
        "bench",
        "elephant",
        "bear",
        "zebra",
        "giraffe",
        "backpack",
        "umbrella",
        "handbag",
        "tie",
        "suitcase",
        "microwave",
        "oven",
        "toaster",
        "sink",
        "refrigerator",
    ),
    (
        "frisbee",
        "skis",
        "snowboard",
        "sports ball",
        "kite",
        "baseball bat",
        "baseball glove",
        "skateboard",
        "surfboard",
        "tennis racket",
        "banana",
        "apple",
        "sandwich",
        "orange",
        "broccoli",
        "carrot",
        "hot dog",
        "pizza",
        "donut",
        "cake",
    ),
    (
        "bed",
        "toilet",
        "laptop",
        "mouse",
        "remote",
        "keyboard",
        "cell phone",
        "book",
        "clock",
        "vase",
        "scissors",
        "teddy bear",
        "hair drier",
        "toothbrush",
        "wine glass",
        "cup",
        "fork",
        "knife",
        "spoon",
        "bowl",
    ),
)


def task_of_categories(names: list[str]) -> np.ndarray:
    """Task index (0..3) of each category name.

    COCO names follow the ORE order; any other class list (e.g. the synthetic one) is cut
    in category order into four contiguous, near-equal chunks.
    """
    ore = {name: t for t, names_t in enumerate(COCO_ORE_TASKS) for name in names_t}
    if names and all(n in ore for n in names):
        return np.array([ore[n] for n in names], dtype=np.int64)
    return (np.arange(len(names)) * N_TASKS // max(1, len(names))).astype(np.int64)


def known_mask(task_index: np.ndarray, task: int) -> np.ndarray:
    """Classes of tasks T1..T`task` are known."""
    return task_index < task
