"""The train stage: unsupervised metric learning on the training crops (``train.method``)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stages import codebase, layout
from stages.atomic import write_text
from stages.backbones import check_options
from stages.config import Params, TrainParams, dump_params, stage_keys
from stages.crops.tensors import decode_to_tensor
from stages.errors import InputError
from stages.model import backbone_meta, build_student, save_model
from stages.shards import read_objects

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Parameters this stage reads (dvc.yaml lists the same keys; the CLI lets the stage read no other).
PARAMS = ("seed", "groups", "train", "train_on", "backbone_options.{backbone}")
TRAIN_PARAMS_AFTER_TRAINING = {"embed_head"}  # read when the model embeds, never by a training step


def training_code() -> set[str]:
    """The modules a training run executes: the import closure of this package (stages.codebase)."""
    return codebase.closure([__name__])


def load_training_crops(objects_dir: Path, input_size: int, split: str = "train") -> tuple[pd.DataFrame, torch.Tensor]:
    """Training objects (splits stage) joined with their scale group and decoded crops; ``split``:
    the shards they come from (``Params.train_split``: ``test`` for a photo folder)."""
    chosen = pd.read_parquet(layout.SPLITS / "train_objects.parquet", columns=["object_id"])
    groups = pd.read_parquet(layout.GROUPS / "assignment.parquet")
    shards = read_objects(objects_dir, split, columns=["object_id", "crop"])
    table = chosen.merge(groups, on="object_id", how="left", validate="one_to_one")
    table = table.merge(shards, on="object_id", how="inner", validate="one_to_one")
    if table["group"].isna().any():
        raise InputError("some training objects have no scale group; rerun the groups stage")
    crops = decode_to_tensor(table["crop"].tolist(), input_size)
    return table.drop(columns="crop"), crops


def resolved_train_params(params: Params, backbone: str) -> TrainParams:
    """``params.train`` with the learning rate this backbone trains at (see resolve_train_params)."""
    from stages.train.loop import resolve_train_params

    return resolve_train_params(params.train, backbone, params.backbone_options.get(backbone))


def fingerprint(params: Params, backbone: str, object_ids: np.ndarray, crops) -> str:
    """Identity of a training run: its parameters, backbone, exact input crops and the training
    code (a checkpoint written by other code is not resumed). Parameters that only say how the
    trained model embeds are left out: changing them resumes the finished run, no retraining."""
    cfg = resolved_train_params(params, backbone).model_dump(mode="json", exclude=TRAIN_PARAMS_AFTER_TRAINING)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    h.update(json.dumps(backbone_meta(backbone, params.backbone_options.get(backbone)), sort_keys=True).encode())
    h.update(codebase.code_hash(training_code()).encode())
    h.update(str((params.seed, params.groups)).encode())
    h.update(np.ascontiguousarray(object_ids).tobytes())
    h.update(crops.numpy().tobytes())
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
        table, crops = load_training_crops(layout.objects_dir(params.train_on), cfg.input_size, params.train_split())
        if len(table) == 0:
            raise InputError("no training objects: check the extract and splits stages")
        log.info("train: %s on %d training crops, %d steps", cfg.method, len(table), cfg.steps)
        out.mkdir(parents=True, exist_ok=True)
        result = train_model(
            cfg,
            TrainingSet(crops, table["group"].to_numpy(np.int64), params.groups),
            RunFiles(
                out / "checkpoint.pt",
                out / "train_log.tsv",
                fingerprint(params, backbone, table["object_id"].to_numpy(), crops),
            ),
            seed=params.seed,
            backbone=backbone,
            options=options,
            stop_after=stop_after,
        )
        model = result.student
        if not result.is_main or (stop_after is not None and stop_after < cfg.steps):
            return  # under torchrun only rank 0 writes
    save_model(out / "model.pt", model, meta)
    dump_params(params, stage_keys(PARAMS, backbone=backbone), out / "params.json")
