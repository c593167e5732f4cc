"""ViT-B/16 with the initialisations the MS-UGCML paper compares: MoCo-v3, CLIP, ImageNet, none.

Every variant is a timm ``VisionTransformer`` built with ``dynamic_img_size=True`` (the position
embedding is resampled for inputs other than 224, e.g. the 64-px training crops) and pools the
class token after the final norm.

``init`` -> architecture, checkpoint file, normalisation, pooled feature:

``mocov3``
    ``vit_base_patch16_224``; a MoCo-v3 file: the pretraining checkpoint ``vit-b-300ep.pth.tar``
    (``{'state_dict': {'module.base_encoder.*', 'module.momentum_encoder.*', 'module.predictor.*'}}``;
    the base encoder is kept, its projector ``head.*``, the momentum encoder and the predictor are
    dropped) or the linear-probe checkpoint ``linear-vit-b-300ep.pth.tar`` (``'module.*'`` with a
    1000-class ``head``), both in timm's key layout (MoCo-v3's ViT *is* a timm ViT).  ImageNet
    mean/std (MoCo-v3's transforms).  768-d class token.
``clip``
    ``vit_base_patch16_clip_quickgelu_224`` (pre-norm, QuickGELU, as OpenAI trained it); OpenAI's
    ``ViT-B-16.pt`` (TorchScript archive) or a state dict with the same ``visual.*`` keys
    (``visual.conv1.weight``, ``visual.class_embedding``, ``visual.positional_embedding``,
    ``visual.ln_pre.*``, ``visual.transformer.resblocks.N.attn.in_proj_weight``, ...,
    ``visual.ln_post.*``, ``visual.proj``), e.g. an OpenCLIP ``ViT-B-16-quickgelu`` checkpoint;
    the text tower is ignored.  Keys are converted by timm's own OpenAI-CLIP converter.  CLIP
    mean/std.  The pooled feature is CLIP's 512-d image embedding (class token through ``proj``).
    OpenCLIP towers trained with plain GELU (``ViT-B-16`` laion2b) are not this architecture.
``imagenet``
    ``vit_base_patch16_224``; a timm-layout file (e.g. the ``model.safetensors`` of
    ``vit_base_patch16_224.augreg2_in21k_ft_in1k``).  mean = std = 0.5 (timm's config for these
    weights).  768-d class token.
``none``
    ``vit_base_patch16_224`` with timm's random init; mean = std = 0.5.  768-d.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from timm.models.vision_transformer import _convert_openai_clip
from torch import nn

from stages.errors import InputError

from .core import Backbone, BackboneSpec, load_checked, materialise, read_state_dict

__all__ = ["VIT_INITS", "build_vit_b16", "mocov3_state_dict", "clip_state_dict"]

VIT_INITS = ("mocov3", "clip", "imagenet", "none")  # the first is the default
INPUT_SIZE = 224
ARCH = {"mocov3": "vit_base_patch16_224", "clip": "vit_base_patch16_clip_quickgelu_224",
        "imagenet": "vit_base_patch16_224", "none": "vit_base_patch16_224"}  # fmt: skip
NORM = {"mocov3": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        "imagenet": ((0.5,) * 3, (0.5,) * 3), "none": ((0.5,) * 3, (0.5,) * 3)}  # fmt: skip
CLIP_EMBED_DIM = 512
MOCO_ENCODER = "base_encoder."


def mocov3_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base encoder of a MoCo-v3 pretraining state dict (``module.`` already stripped), in
    timm's layout; a linear-probe (or already extracted) state dict is returned as it is."""
    if any(k.startswith(MOCO_ENCODER) for k in sd):
        return {k[len(MOCO_ENCODER) :]: v for k, v in sd.items() if k.startswith(MOCO_ENCODER)}
    return dict(sd)


def clip_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """OpenAI/OpenCLIP ``visual.*`` keys -> timm's keys (timm's converter; ``proj`` -> ``head``)."""
    if "visual.class_embedding" not in sd and "class_embedding" in sd:  # a saved ``model.visual``
        sd = {f"visual.{k}": v for k, v in sd.items()}
    if "visual.class_embedding" not in sd:
        some = ", ".join(list(sd)[:3])
        raise InputError(
            f"weights file {path} does not match backbone 'vit_b16' (init clip): no OpenAI/OpenCLIP "
            f"'visual.class_embedding' key (found {some}, ...)"
        )
    return _convert_openai_clip(dict(sd), model, prefix="visual.")


def build_vit_b16(init: str, path: Path | None, with_classifier: bool) -> Backbone:
    """ViT-B/16 of ``init`` (see the module doc); ``path`` None -> random init of that architecture."""
    label = f"vit_b16 (init {init})"
    if init == "clip" and with_classifier:
        raise InputError("backbone 'vit_b16' with init clip has no ImageNet classifier")
    sd = read_state_dict(path, label) if path is not None else None
    num_classes = CLIP_EMBED_DIM if init == "clip" else (1000 if with_classifier else 0)
    model = timm.create_model(
        ARCH[init], pretrained=False, num_classes=num_classes, dynamic_img_size=True,
        device="meta" if sd is not None else None,
    )  # fmt: skip
    if sd is not None:
        model = materialise(model)
        if init == "clip":
            sd = clip_state_dict(sd, model, path)
            load_checked(model, sd, path, label)
        else:
            sd = mocov3_state_dict(sd) if init == "mocov3" else sd
            load_checked(model, sd, path, label, ignore_prefixes=("head.",))
    mean, std = NORM[init]
    spec = BackboneSpec(
        name="vit_b16",
        feature_dim=num_classes or model.num_features,
        input_size=INPUT_SIZE,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        init=init,
    )
    return Backbone(model, spec).eval()
