"""The model file ``models/<backbone>/model.pt``: a student's weights with what rebuilds it (``meta``).

``meta`` holds the backbone name, init and weights file, the number of heads, the head and
embedding dimensions, the input size and the retrieval head choice (see :func:`model_meta`).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from stages.atomic import save_torch
from stages.backbones import BackboneOptionsLike, check_init
from stages.errors import MissingInputError
from stages.model.networks import StudentModel, build_student


def backbone_meta(backbone: str, options: BackboneOptionsLike | None) -> dict:
    """How a model's backbone was built (saved in model.pt, so the file says how to rebuild it)."""
    return {
        "backbone": backbone,
        "init": check_init(backbone, options.init if options is not None else None),
        "weights": options.weights if options is not None else None,
    }


def meta_options(meta: dict) -> SimpleNamespace:
    """The backbone options recorded by :func:`backbone_meta`."""
    return SimpleNamespace(init=meta.get("init"), weights=meta.get("weights"), lr=None)


def save_model(path: Path, model: StudentModel, meta: dict) -> None:
    """Write the model with what is needed to rebuild it (``meta``: backbone, n_heads, dims, input_size)."""
    save_torch(path, {"meta": meta, "state_dict": model.state_dict()})


def load_model(path: Path) -> tuple[StudentModel, dict]:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"model file not found: {path}; run the train stage first")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    model = build_student(
        meta["backbone"],
        meta["n_heads"],
        meta["teacher_dim"],
        meta["embed_dim"],
        meta["input_size"],
        pretrained=False,
        embed_head=meta.get("embed_head", "first"),
        options=meta_options(meta),
        group_boundaries=meta.get("group_boundaries"),
    )
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


def pretrained_model(meta: dict) -> StudentModel:
    """The baseline of a saved model: its backbone with the pretrained weights, no head, no training."""
    return build_student(
        meta["backbone"], 0, meta["teacher_dim"], meta["embed_dim"], meta["input_size"], options=meta_options(meta)
    ).eval()
