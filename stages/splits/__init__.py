"""The splits stage: Task1–Task4 known/unknown classes and the training objects of a task.

The training split is ``params.train_split()``: ``train``, or ``test`` for a photo folder (its one
table is gallery and training set).  A training split **without any ground-truth box** (a photo
folder) has no class to filter by: every extracted object of it is a training object, and
``tasks.json`` lists no class (every query class of another dataset is then "unknown").
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from stages import layout
from stages.atomic import write_json, write_parquet
from stages.config import Params
from stages.metrics.relevance import relevant_classes
from stages.shards import BOX_COLUMNS, read_objects
from stages.splits.tasks import known_mask, task_of_categories
from stages.tables import load_split

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("task", "train_on")


def training_objects(objects: pd.DataFrame, gt: pd.DataFrame, known_ids: np.ndarray) -> np.ndarray:
    """Mask of extracted objects that overlap (IoU > 0) a GT box of a known class."""
    labels = relevant_classes(
        objects["image_id"].to_numpy(np.int64),
        objects[BOX_COLUMNS].to_numpy(np.float64),
        gt["image_id"].to_numpy(np.int64),
        gt[BOX_COLUMNS].to_numpy(np.float64),
        gt["category_id"].to_numpy(np.int64),
        iou_threshold=0.0,
        n_classes=int(max(known_ids.max(initial=0), gt["category_id"].max() if len(gt) else 0)) + 1,
    )
    return np.asarray(labels[:, known_ids].sum(axis=1)).ravel() > 0


def run(params: Params) -> None:
    """Write the task split of the ``train_on`` dataset (tasks.json) and its training objects."""
    out = layout.SPLITS
    split = params.train_split()
    train = load_split(layout.dataset_dir(params.train_on) / f"{split}.json")
    cats = train.categories
    task_index = task_of_categories(cats["name"].tolist())
    known = known_mask(task_index, params.task)
    known_ids = cats["category_id"].to_numpy(np.int64)[known]
    tasks = {
        "task": params.task,
        "tasks": [cats["name"][task_index == t].tolist() for t in range(4)],
        "known": known_ids.tolist(),
        "known_names": cats["name"][known].tolist(),  # other datasets match known classes by name
        "unknown": cats["category_id"].to_numpy(np.int64)[~known].tolist(),
    }
    write_json(out / "tasks.json", tasks)
    objects = read_objects(
        layout.objects_dir(params.train_on), split, columns=["object_id", "image_id", *BOX_COLUMNS, "area"]
    )
    if train.boxes.empty:  # no labels at all: unsupervised on every extracted object
        keep = np.ones(len(objects), bool)
    else:
        keep = training_objects(objects, train.boxes, known_ids)
    chosen = objects.loc[keep, ["object_id", "image_id", "area"]].reset_index(drop=True)
    write_parquet(out / "train_objects.parquet", chosen)
    log.info(
        "splits: task %d: %d known classes, %d/%d training objects",
        params.task,
        len(known_ids),
        len(chosen),
        len(objects),
    )
