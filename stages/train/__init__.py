"""The train stage: unsupervised metric learning on the training crops (``train.method``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from stages import codebase, layout
from stages.atomic import write_text
from stages.backbones import check_options
from stages.config import Params, TrainParams, dump_params, stage_keys
from stages.errors import InputError
from stages.model import backbone_meta, build_student, save_model
from stages.shards import shard_paths
from stages.shards.by_id import ShardLocations, locate
from stages.train.data import CropSource, PackedCrops, training_crops

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("seed", "groups", "train", "train_on", "backbone_options.{backbone}")
TRAIN_PARAMS_AFTER_TRAINING = {"embed_head"}  # read when the model embeds, never by a training step
# how crops reach a step, not which: the same batches and the same model whatever their values
TRAIN_PARAMS_DELIVERY = {"workers", "prefetch", "cache_gb"}


def training_code() -> set[str]:
    """The modules a training run executes: the import closure of this package (stages.codebase)."""
    return codebase.closure([__name__])


def training_objects(objects_dir: Path, split: str = "train") -> tuple[pd.DataFrame, ShardLocations]:
    """Training objects (splits stage) with their scale group, and where each lies in the ``split``
    shards (``Params.train_split``: ``test`` for a photo folder).

    Only the ids and groups are read here (about 16 bytes per object with the locations); the crops
    are read by :mod:`stages.train.data`, in memory or streamed."""
    chosen = pd.read_parquet(layout.SPLITS / "train_objects.parquet", columns=["object_id", "area"])
    groups = pd.read_parquet(layout.GROUPS / "assignment.parquet")
    table = chosen.merge(groups, on="object_id", how="left", validate="one_to_one")
    if table["group"].isna().any():
        raise InputError("some training objects have no scale group; rerun the groups stage")
    locations = locate(objects_dir, split, table["object_id"].to_numpy(np.int64))
    return table, locations


def load_training_crops(
    objects_dir: Path,
    input_size: int,
    cache_gb: float = float("inf"),
    workers: int = 0,
    split: str = "train",
    pack_folder: Path | None = None,
) -> tuple[pd.DataFrame, CropSource]:
    """Training objects with their scale group, and their crops: decoded in memory when they fit
    ``cache_gb`` (the rule of :func:`stages.train.data.training_crops`), else streamed (packed
    into ``pack_folder`` first when given; under torchrun rank 0 packs)."""
    table, locations = training_objects(objects_dir, split)
    rank = int(os.environ.get("RANK", "0"))
    return table, training_crops(locations, input_size, cache_gb, workers, pack_folder, rank)


def data_identity(objects_dir: Path, object_ids: np.ndarray, group_of: np.ndarray, split: str = "train") -> str:
    """What a run's crops are, without reading a pixel: the extraction manifest's fingerprint
    (extract params and dataset tables), the train shards' names and sizes, the chosen object
    ids and their groups."""
    h = hashlib.sha256()
    manifest = Path(objects_dir) / "manifest.json"
    if manifest.exists():
        h.update(str(json.loads(manifest.read_text()).get("fingerprint")).encode())
    for p in shard_paths(objects_dir, split):
        h.update(f"{p.name}:{p.stat().st_size};".encode())
    h.update(np.ascontiguousarray(object_ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(group_of, dtype=np.int64).tobytes())
    return h.hexdigest()


def _group_area(table: pd.DataFrame, n_groups: int) -> np.ndarray:
    """Mean box area of each scale group (0 for an empty one)."""
    return table.groupby("group")["area"].mean().reindex(range(n_groups), fill_value=0.0).to_numpy(np.float64)


def _routing_boundaries(n_groups: int) -> list[float]:
    """The groups stage's box-area boundaries (``boundaries.json``), which the ``routed`` retrieval
    head uses to send each gallery object and query to the head of its scale group."""
    boundaries = json.loads((layout.GROUPS / "boundaries.json").read_text())["area_boundaries"]
    if len(boundaries) != n_groups - 1:
        raise InputError(
            f"data/groups has {len(boundaries) + 1} scale groups, params say {n_groups}; rerun the groups stage"
        )
    return [float(b) for b in boundaries]


def resolved_train_params(params: Params, backbone: str) -> TrainParams:
    """``params.train`` with the learning rate this backbone trains at (see resolve_train_params)."""
    from stages.train.loop import resolve_train_params

    return resolve_train_params(params.train, backbone, params.backbone_options.get(backbone))


def fingerprint(params: Params, backbone: str, object_ids: np.ndarray, data: str) -> str:
    """Identity of a training run: its parameters, backbone, input crops (``data``:
    :func:`data_identity`) and the training code (a checkpoint written by other code is not
    resumed). Parameters that only say how the trained model embeds, or how the crops are
    delivered (workers, cache), are left out: changing them resumes the run, no retraining."""
    cfg = resolved_train_params(params, backbone).model_dump(
        mode="json", exclude=TRAIN_PARAMS_AFTER_TRAINING | TRAIN_PARAMS_DELIVERY
    )
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    h.update(json.dumps(backbone_meta(backbone, params.backbone_options.get(backbone)), sort_keys=True).encode())
    h.update(codebase.code_hash(training_code()).encode())
    h.update(str((params.seed, params.groups)).encode())
    h.update(np.ascontiguousarray(object_ids).tobytes())
    h.update(data.encode())
    return h.hexdigest()


def run(params: Params, backbone: str, stop_after: int | None = None) -> None:
    """Train ``backbone`` into ``models/<backbone>/`` (model.pt, params.json, train_log.tsv)."""
    from stages.train.loop import LOG_COLUMNS, RunFiles, TrainingSet, train_model

    options = params.backbone_options.get(backbone)
    if options is not None:
        check_options({backbone: options})
    cfg = resolved_train_params(params, backbone)
    out = layout.model_dir(backbone)
    meta = {
        "method": cfg.method,
        **backbone_meta(backbone, options),
        "lr": cfg.lr,
        "n_heads": {"none": 0, "ms_ugcml": params.groups}.get(cfg.method, 1),
        "embed_head": cfg.embed_head,
        "teacher_dim": cfg.teacher_dim,
        "embed_dim": cfg.embed_dim,
        "input_size": cfg.input_size,
    }
    if cfg.method == "none":
        model = build_student(backbone, 0, cfg.teacher_dim, cfg.embed_dim, cfg.input_size, options=options)
        write_text(out / "train_log.tsv", "\t".join(LOG_COLUMNS) + "\n")
    else:
        objects_dir = layout.objects_dir(params.train_on)
        split = params.train_split()
        packed = out / "checkpoint.crops"  # beside the checkpoint: kept for a resume, removed when done
        table, crops = load_training_crops(
            objects_dir, cfg.input_size, cfg.cache_gb, cfg.workers, split, pack_folder=packed
        )
        group_of = table["group"].to_numpy(np.int64)
        if len(table) == 0:
            raise InputError("no training objects: check the extract and splits stages")
        meta["group_boundaries"] = _routing_boundaries(params.groups)
        log.info("train: %s on %d training crops, %d steps", cfg.method, len(table), cfg.steps)
        out.mkdir(parents=True, exist_ok=True)
        result = train_model(
            cfg,
            TrainingSet(crops, group_of, params.groups, _group_area(table, params.groups)),
            RunFiles(
                out / "checkpoint.pt",
                out / "train_log.tsv",
                fingerprint(
                    params,
                    backbone,
                    table["object_id"].to_numpy(),
                    data_identity(objects_dir, table["object_id"].to_numpy(), group_of, split),
                ),
            ),
            seed=params.seed,
            backbone=backbone,
            options=options,
            stop_after=stop_after,
        )
        model = result.student
        if not result.is_main or (stop_after is not None and stop_after < cfg.steps):
            return  # under torchrun only rank 0 writes
        if isinstance(crops, PackedCrops):
            crops.remove()
    save_model(out / "model.pt", model, meta)
    dump_params(params, stage_keys(PARAMS, backbone=backbone), out / "params.json")
