"""Image backbones for object embeddings: ``[0, 1]`` RGB ``[B, 3, H, W]`` -> ``[B, feature_dim]``.

>>> from stages.backbones import build_backbone, build_from_options, learning_rate
>>> net = build_backbone("efficientnet_lite0")          # ImageNet weights from the pip package
>>> net.spec.feature_dim, net.spec.input_size
(1280, 224)
>>> net = build_from_options("vit_b16", params.backbone_options.get("vit_b16"))   # doctest: +SKIP
>>> lr = learning_rate("vit_b16", params.backbone_options.get("vit_b16"))         # doctest: +SKIP

Registered names are the keys of :data:`BACKBONES` (``efficientnet_lite0``, ``resnet50``,
``googlenet``, ``mit_b2``, ``vit_b16``); ``timm-<model>`` builds any timm model (weights only
from a local file).  Each entry lists its ``init`` values and default learning rate.
:func:`imagenet_classifier` gives the same networks with their 1000-class head, to check
weights.  Details in :mod:`stages.backbones.registry`.
"""

from .core import Backbone, BackboneSpec
from .registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    BackboneEntry,
    BackboneOptionsLike,
    build_backbone,
    build_from_options,
    check_init,
    check_options,
    default_lr,
    imagenet_classifier,
    learning_rate,
    lookup,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneEntry",
    "BackboneOptionsLike",
    "BackboneSpec",
    "build_backbone",
    "build_from_options",
    "check_init",
    "check_options",
    "default_lr",
    "imagenet_classifier",
    "learning_rate",
    "lookup",
]
