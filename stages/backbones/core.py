"""The backbone wrapper and the checkpoint loading shared by every registry entry.

:class:`Backbone` is a thin ``nn.Module``: it normalises ``[0, 1]`` RGB input with one fused
``torch.addcmul`` (``x * (1/std) + (-mean/std)``, both non-persistent buffers) and calls the
wrapped model, which returns pooled features ``[B, feature_dim]``.  Its ``state_dict`` is the
wrapped model's under the prefix ``model.`` (the normalisation is part of the spec, not of the
checkpoint).

Weights are only ever read from local files (``torch.load(..., weights_only=True)``,
``safetensors`` files, or the state dict of a TorchScript archive such as OpenAI's CLIP ``.pt``
files, read with ``torch.jit.load``, which runs no Python pickle code); nothing is downloaded.
:func:`read_state_dict` and :func:`load_checked` turn a missing file or a
checkpoint that does not fit the architecture into a ``FileNotFoundError`` / ``ValueError``
whose message names both the file and the backbone.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stages.errors import InputError, MissingInputError

__all__ = ["Backbone", "BackboneSpec", "read_state_dict", "load_checked", "materialise"]


@dataclass(frozen=True)
class BackboneSpec:
    """What a caller needs to know about a backbone's input and output."""

    name: str
    feature_dim: int  # size of the pooled feature (or of the logits, for imagenet_classifier)
    input_size: int  # native input side, e.g. 224
    mean: tuple[float, float, float]  # normalisation of [0, 1] RGB inputs: (x - mean) / std
    std: tuple[float, float, float]
    # the initialisation whose architecture and normalisation this network has ("none": random)
    init: str = "imagenet"


class Backbone(nn.Module):
    """``forward(x)``: ``x`` float ``[B, 3, H, W]`` RGB in ``[0, 1]`` -> ``[B, spec.feature_dim]``.

    The normalisation ``(x - mean) / std`` is done as the single op
    ``torch.addcmul(shift, x, scale)`` with ``scale = 1/std`` and ``shift = -mean/std``
    (registered, non-persistent buffers of shape ``[1, 3, 1, 1]``, so ``.to(device/dtype)``
    moves them along with the model).  The input is made channels-last first (oneDNN and cuDNN
    convolutions run faster on it); the weights keep the default layout.
    """

    spec: BackboneSpec

    def __init__(self, model: nn.Module, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        self.model = model
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / std, persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` in one op."""
        return torch.addcmul(self.shift, x, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last activations (the weights keep their layout): 1.45x the embedding throughput
        # and ~1.1x the training step of the default backbone on 2 CPU cores (README "Backbones")
        x = x.contiguous(memory_format=torch.channels_last)
        return self.model(torch.addcmul(self.shift, x, self.scale))

    def extra_repr(self) -> str:
        s = self.spec
        return f"name={s.name!r}, init={s.init!r}, feature_dim={s.feature_dim}, input_size={s.input_size}"


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_WRAPPER_PREFIXES = ("module.", "model.")


def read_state_dict(path: str | Path, model_name: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict.

    Accepts a plain state dict, or one wrapped under ``state_dict`` / ``model_state_dict`` /
    ``model`` / ``module``; strips a ``module.`` (DataParallel) or ``model.`` (a saved
    :class:`Backbone`) prefix shared by every key.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"weights file for backbone {model_name!r} not found: {path}")
    try:
        obj = _load_file(path)
    except Exception as exc:  # pickle / zip / safetensors / TorchScript errors of many kinds
        raise InputError(f"cannot read weights file {path} for backbone {model_name!r}: {exc}") from exc
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(
            f"weights file {path} for backbone {model_name!r} holds no state dict (got {type(obj).__name__})"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(
            f"weights file {path} for backbone {model_name!r} is not a state dict "
            f"(non-tensor entries such as {bad[:3]!r})"
        )
    sd = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/__torch__/" in n or n.endswith("/constants.pkl") for n in z.namelist())


def _load_file(path: Path) -> object:
    """The object stored in ``path``: a ``.safetensors`` file, a TorchScript archive (its state
    dict), or a ``torch.save`` file read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if _is_torchscript(path):
        with warnings.catch_warnings():  # TorchScript is deprecated, OpenAI's CLIP files are still in it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu").state_dict()
    return torch.load(path, map_location="cpu", weights_only=True)


def materialise(model: nn.Module) -> nn.Module:
    """CPU storage (uninitialised) for a model built on the meta device, which a strict
    :func:`load_checked` then fills entirely; skips the random init of large models (ViT-B: ~5 s).

    Refuses models with non-persistent buffers, which no checkpoint would fill.
    """
    saved = set(model.state_dict())
    transient = [n for n, _ in model.named_buffers() if n not in saved]
    if transient:
        raise RuntimeError(f"cannot build {type(model).__name__} empty: non-persistent buffers {transient[:3]}")
    return model.to_empty(device="cpu")


def _examples(items: list, n: int = 3) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def load_checked(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    path: str | Path,
    model_name: str,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """Strictly load ``sd`` into ``model``; any mismatch -> ``ValueError`` naming file and model.

    Keys of ``sd`` under one of ``ignore_prefixes`` (e.g. a classifier the feature model does not
    have) are dropped first when the model has no such key.
    """
    own = model.state_dict()
    prefixes = tuple(ignore_prefixes)
    sd = {k: v for k, v in sd.items() if k in own or not (prefixes and k.startswith(prefixes))}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys [{_examples(missing)}]")
        if unexpected:
            parts.append(f"unexpected keys [{_examples(unexpected)}]")
        if shapes:
            parts.append(f"shape mismatches [{_examples(shapes)}]")
        raise InputError(f"weights file {path} does not match backbone {model_name!r}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
