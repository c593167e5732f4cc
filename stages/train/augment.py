"""Batched, vectorised augmentations on crop tensors (one affine warp for the whole batch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_views(
    x: torch.Tensor,
    n_views: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    out_size: int,
    rows: tuple[int, int] | None = None,
    batch: int | None = None,
    colour: bool = False,
) -> torch.Tensor:
    """Views stacked as [n_views*B, 3, out, out]: random resized crop, flip (STML's views) and, with
    ``colour``, brightness/contrast.

    ``x`` is float [B, 3, H, W] in [0, 1].  Crop area fraction ~ U(scale), aspect ~ logU(3/4, 4/3),
    a random position inside the crop, horizontal flip with p = 0.5.  With ``rows = (lo, hi)``,
    ``x`` holds rows lo:hi of a global batch of ``batch`` crops: the random draws are those of
    the global batch (the same generator state gives every process the same draws) and only
    these rows' views are made, stacked [view 1 of the rows; view 2 of the rows; ...].
    """
    b = len(x) if rows is None else batch
    n = n_views * b

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    area = uniform(*scale)
    ratio = uniform(math.log(3 / 4), math.log(4 / 3)).exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)
    sy = (area / ratio).sqrt().clamp(max=1.0)
    tx = uniform(-1, 1) * (1 - sx)
    ty = uniform(-1, 1) * (1 - sy)
    flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    if colour:
        bright = uniform(-0.1, 0.1, 1, 1, 1)
        contrast = uniform(0.8, 1.2, 1, 1, 1)
    if rows is not None:  # keep this process's rows of every view
        keep = (torch.arange(n_views)[:, None] * b + torch.arange(*rows)[None, :]).flatten()
        theta, n = theta[keep], len(keep)
        if colour:
            bright, contrast = bright[keep], contrast[keep]
    theta = theta.to(x.device, x.dtype)
    src = x.repeat(n_views, 1, 1, 1)
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    views = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if not colour:
        return views
    bright = bright.to(x.device, x.dtype)
    contrast = contrast.to(x.device, x.dtype)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    return ((views - mean) * contrast + mean + bright).clamp(0, 1)


def resize_batch(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """Plain resize of a float batch to out_size² (evaluation path)."""
    if x.shape[-1] == out_size and x.shape[-2] == out_size:
        return x
    return F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True)
