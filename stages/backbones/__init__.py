"""Image backbones for object embeddings: ``[0, 1]`` RGB ``[B, 3, H, W]`` -> ``[B, feature_dim]``.

>>> from stages.backbones import build_backbone
>>> net = build_backbone("efficientnet_lite0")          # ImageNet weights from the pip package
>>> net.spec.feature_dim, net.spec.input_size
(1280, 224)

Registered names are the keys of :data:`BACKBONES` (``efficientnet_lite0``, ``resnet50``,
``googlenet``); ``timm:<model>`` builds any timm model (weights only from a local file).
:func:`imagenet_classifier` gives the same networks with their 1000-class head, to check
weights.  Details in :mod:`stages.backbones.registry`.
"""

from .core import Backbone, BackboneSpec
from .registry import BACKBONES, DEFAULT_BACKBONE, build_backbone, imagenet_classifier

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneSpec",
    "build_backbone",
    "imagenet_classifier",
]
