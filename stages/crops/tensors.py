"""Crops to network input: uint8 tensors ``[N, 3, S, S]`` (what train, index and search feed a model)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from stages.crops.images import decode_crop


def crops_to_tensor(crops: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 crops of any shape -> uint8 tensor [N, 3, size, size] (stretched to square)."""
    out = np.empty((len(crops), size, size, 3), dtype=np.uint8)
    for i, c in enumerate(crops):  # per-crop resize: image I/O, not maths
        interp = cv2.INTER_AREA if max(c.shape[:2]) > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(c, (size, size), interpolation=interp)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode_to_tensor(encoded: Sequence[bytes], size: int) -> torch.Tensor:
    """Encoded crops (shard ``crop`` column) -> uint8 tensor [N, 3, size, size]."""
    return crops_to_tensor([decode_crop(b) for b in encoded], size)
