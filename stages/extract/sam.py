"""SAM "segment everything" proposals: segment-anything's automatic mask generator.

The model is built with segment-anything's ``sam_model_registry`` and the checkpoint is loaded here
with ``torch.load(weights_only=True)``, after its tensor names and shapes were checked against the
model type (built on the ``meta`` device, free), so a wrong file fails with a message naming the
file, the expected model type and what the file holds.  The generator batches the prompt points
(``points_per_batch``); on CUDA the image encoder, the bulk of the work, may run under bf16/fp16
autocast while the mask decoder and its thresholds stay in fp32.

Boxes are the masks' pixel extents as half-open ``[x1, x2)`` ranges (SAM's own XYWH boxes end on the
last mask pixel), the score is the predicted IoU, and the stability score is kept.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from stages.config import SamParams
from stages.errors import UserError
from stages.extract.proposals import Proposals

log = logging.getLogger(__name__)

__all__ = ["SamExtractor", "SamCheckpointError", "load_sam", "resolve_device"]

Builder = Callable[..., nn.Module]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_WIDTH_KEY = "image_encoder.patch_embed.proj.weight"
_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")
# Image encoder width of segment-anything's released checkpoints, to name what a wrong file holds.
_KNOWN_WIDTHS = {1280: "vit_h", 1024: "vit_l", 768: "vit_b"}


class SamCheckpointError(UserError, ValueError):
    """The SAM checkpoint is missing, unreadable or of another model type."""


def _registry() -> Mapping[str, Builder]:
    from segment_anything import sam_model_registry

    return sam_model_registry


def _encoder_shape(state: Mapping[str, torch.Tensor]) -> str:
    width = state[_WIDTH_KEY].shape[0] if _WIDTH_KEY in state else None
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    kind = _KNOWN_WIDTHS.get(width, "unknown")
    return f"image encoder width {width}, depth {len(blocks)} ({kind})"


def _read_checkpoint(path: Path, model_type: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SamCheckpointError(
            f"SAM checkpoint file not found: {path} (extract.sam.checkpoint, a {model_type} checkpoint)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors have many types
        raise SamCheckpointError(
            f"cannot read {path} as a SAM {model_type} checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SamCheckpointError(f"{path} is not a SAM {model_type} checkpoint: expected a state dict of tensors")
    return state


def load_sam(
    model_type: str, checkpoint: str | Path | None, builders: Mapping[str, Builder] | None = None
) -> nn.Module:
    """Build ``model_type`` with its registry builder and load the weights of ``checkpoint`` into it."""
    builders = builders if builders is not None else _registry()
    if model_type not in builders:
        raise SamCheckpointError(f"unknown SAM model type {model_type!r}; valid: {sorted(builders)}")
    if checkpoint is None:
        raise SamCheckpointError(
            f"extract.sam.checkpoint is not set: give the path of a SAM {model_type} checkpoint file"
        )
    path = Path(checkpoint)
    state = _read_checkpoint(path, model_type)
    with torch.device("meta"):
        expected = {k: v.shape for k, v in builders[model_type]().state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        want = _encoder_shape({k: torch.empty(s, device="meta") for k, s in expected.items()})
        details = []
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} tensors of another shape, "
                f"e.g. {k} {tuple(state[k].shape)} instead of {tuple(expected[k])}"
            )
        if missing:
            details.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise SamCheckpointError(
            f"{path} is not a SAM {model_type} checkpoint: {model_type} has {want}, the file has "
            f"{_encoder_shape(state)}; {'; '.join(details)}. Set extract.sam.model_type to the file's model type."
        )
    model = builders[model_type]()
    model.load_state_dict(state, strict=True)
    return model.eval()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("extract.sam.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(device)


class AutocastEncoder(nn.Module):
    """Runs an image encoder under autocast and hands fp32 embeddings to the (fp32) mask decoder."""

    def __init__(self, encoder: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.encoder = encoder
        self.img_size = encoder.img_size
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.encoder(x)
        return out.float()


class SamExtractor:
    """``propose(image)`` runs the automatic mask generator once on the whole image."""

    name = "sam"

    def __init__(self, cfg: SamParams, builders: Mapping[str, Builder] | None = None):
        from segment_anything import SamAutomaticMaskGenerator

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        model = load_sam(cfg.model_type, cfg.checkpoint, builders).to(self.device)
        if cfg.precision != "fp32":
            if self.device.type == "cuda":
                if cfg.precision == "bf16" and not torch.cuda.is_bf16_supported():
                    raise UserError("extract.sam.precision bf16 is not supported by this GPU; use fp16 or fp32")
                model.image_encoder = AutocastEncoder(model.image_encoder, "cuda", _DTYPES[cfg.precision])
            else:
                log.warning(
                    "extract: SAM runs in fp32 on CPU (extract.sam.precision %s applies to CUDA only)", cfg.precision
                )
        self.generator = SamAutomaticMaskGenerator(
            model,
            points_per_side=cfg.points_per_side,
            points_per_batch=cfg.points_per_batch,
            pred_iou_thresh=cfg.pred_iou_thresh,
            stability_score_thresh=cfg.stability_score_thresh,
            box_nms_thresh=cfg.box_nms_thresh,
            crop_n_layers=cfg.crop_n_layers,
            min_mask_region_area=cfg.min_mask_region_area,
            # RLE out: no full-size binary mask is decoded unless the masks are kept (as COCO RLE).
            output_mode="coco_rle" if cfg.keep_masks else "uncompressed_rle",
        )

    def propose(self, image: np.ndarray) -> Proposals:
        records = self.generator.generate(image)
        n = len(records)
        xywh = np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] + 1.0], axis=1)
        masks = None
        if self.cfg.keep_masks:
            masks = [
                json.dumps({"size": list(r["segmentation"]["size"]), "counts": r["segmentation"]["counts"]})
                for r in records
            ]
        return Proposals(
            boxes=boxes,
            scores=np.asarray([r["predicted_iou"] for r in records], dtype=np.float32),
            stability=np.asarray([r["stability_score"] for r in records], dtype=np.float32),
            masks=masks,
        )
