"""The train stage: unsupervised metric learning on the training crops (``train.method``)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stages import layout
from stages.backbones import learning_rate
from stages.config import Params, TrainParams, dump_params
from stages.index.embed import decode_to_tensor
from stages.shards import read_objects
from stages.train.model import backbone_meta, build_student, save_model

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def load_training_crops(objects_dir: Path, input_size: int) -> tuple[pd.DataFrame, torch.Tensor]:
    """Training objects (splits stage) joined with their scale group and decoded crops."""
    chosen = pd.read_parquet(layout.SPLITS / "train_objects.parquet", columns=["object_id"])
    groups = pd.read_parquet(layout.GROUPS / "assignment.parquet")
    shards = read_objects(objects_dir, "train", columns=["object_id", "crop"])
    table = chosen.merge(groups, on="object_id", how="left", validate="one_to_one")
    table = table.merge(shards, on="object_id", how="inner", validate="one_to_one")
    if table["group"].isna().any():
        raise ValueError("some training objects have no scale group; rerun the groups stage")
    crops = decode_to_tensor(table["crop"].tolist(), input_size)
    return table.drop(columns="crop"), crops


TRAINING_CODE = ("train", "losses", "samplers", "backbones")
TRAIN_PARAMS_AFTER_TRAINING = {"embed_head"}  # read when the model embeds, never by a training step


def resolved_train_params(params: Params, backbone: str) -> TrainParams:
    """``params.train`` with the learning rate this backbone trains at: ``backbone_options.<name>.lr``,
    else ``train.lr``, else the backbone's default (1e-4 GoogLeNet, 3e-5 MiT-B2/ViT-B, ...)."""
    lr = learning_rate(backbone, params.backbone_options.get(backbone), fallback=params.train.lr)
    return params.train.model_copy(update={"lr": lr})


def fingerprint(params: Params, backbone: str, object_ids: np.ndarray, crops) -> str:
    """Identity of a training run: its parameters, backbone, exact input crops and the training
    code (a checkpoint written by other code is not resumed). Parameters that only say how the
    trained model embeds are left out: changing them resumes the finished run, no retraining."""
    cfg = resolved_train_params(params, backbone).model_dump(mode="json", exclude=TRAIN_PARAMS_AFTER_TRAINING)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    h.update(json.dumps(backbone_meta(backbone, params.backbone_options.get(backbone)), sort_keys=True).encode())
    package = Path(__file__).resolve().parents[1]
    for path in sorted(p for folder in TRAINING_CODE for p in (package / folder).rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    h.update(str((params.seed, params.groups)).encode())
    h.update(np.ascontiguousarray(object_ids).tobytes())
    h.update(crops.numpy().tobytes())
    return h.hexdigest()


def run(params: Params, backbone: str | None = None, stop_after: int | None = None) -> None:
    """Train ``backbone`` (default: the first of ``backbones``) into ``models/<backbone>/``."""
    from stages.train.loop import LOG_COLUMNS, train_model

    backbone = params.backbone(backbone)
    cfg = resolved_train_params(params, backbone)
    options = params.backbone_options.get(backbone)
    out = layout.model_dir(backbone)
    out.mkdir(parents=True, exist_ok=True)
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
        (out / "train_log.tsv").write_text("\t".join(LOG_COLUMNS) + "\n")
    else:
        table, crops = load_training_crops(layout.objects_dir(params.train_on), cfg.input_size)
        if len(table) == 0:
            raise ValueError("no training objects: check the extract and splits stages")
        log.info("train: %s on %d training crops, %d steps", cfg.method, len(table), cfg.steps)
        result = train_model(
            cfg,
            crops,
            table["group"].to_numpy(np.int64),
            params.groups,
            params.seed,
            out / "checkpoint.pt",
            out / "train_log.tsv",
            fingerprint(params, backbone, table["object_id"].to_numpy(), crops),
            stop_after=stop_after,
            backbone=backbone,
            options=options,
        )
        model = result.student
        if not result.is_main or (stop_after is not None and stop_after < cfg.steps):
            return  # under torchrun only rank 0 writes
    save_model(out / "model.pt", model, meta)
    dump_params(params, out / "params.json")
