"""SegFormer's Mix Transformer encoder (MiT-B2) on timm's layers, in the official checkpoint layout.

Xie et al., *SegFormer*, NeurIPS 2021.  Four stages; stage ``i`` is an overlapping patch
embedding (a strided convolution + LayerNorm), ``depths[i]`` transformer blocks with
*efficient self-attention* (keys/values from the map shrunk ``sr_ratios[i]`` times by a strided
convolution + LayerNorm) and a *Mix-FFN* (fc1 -> 3x3 depthwise conv -> GELU -> fc2), then a
LayerNorm.  No position embedding: any input size whose stage-1 map (``size / 4``) is at least
``sr_ratios[0]`` (8) pixels wide works, i.e. inputs of 32 px and more.

Parameter names are those of the NVlabs release (``mit_b2.pth``, ImageNet-1k): ``patch_embed1.proj
.weight``, ``patch_embed1.norm.weight``, ``block1.0.norm1.weight``, ``block1.0.attn.q.weight``,
``block1.0.attn.kv.weight``, ``block1.0.attn.sr.weight``, ``block1.0.attn.norm.weight``,
``block1.0.mlp.fc1.weight``, ``block1.0.mlp.dwconv.dwconv.weight``, ``block1.0.mlp.fc2.weight``,
``norm1.weight``, ..., ``head.weight`` (1000 x 512), so that file loads strictly.  The
ImageNet classifier of the release pools the stage-4 tokens by their mean after ``norm4``; the
same global average (512-d) is the pooled feature here (the MS-UGCML paper does not say how it
pooled MiT-B2).  Written for this project (the reference code carries NVIDIA's non-commercial
licence); checked against segmentation-models-pytorch's port of it in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

__all__ = ["MixTransformer", "MIT_B2", "mit_b2_model"]

# embed_dims, num_heads, depths, sr_ratios of MiT-B2 (SegFormer Table 6); mlp ratio 4, qkv bias.
MIT_B2 = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), depths=(3, 4, 6, 3), sr_ratios=(8, 4, 2, 1))


class OverlapPatchEmbed(nn.Module):
    """``[B, C, H, W]`` -> tokens ``[B, h*w, dim]`` and ``(h, w)``: strided conv (k, stride s, pad k//2) + LayerNorm."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from the token map reduced ``sr_ratio``
    times (a ``sr_ratio``-strided conv + LayerNorm), cutting the cost by ``sr_ratio**2``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        k, v = self.kv(x).view(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DepthwiseConv(nn.Module):
    """3x3 depthwise convolution over the token map (the position cue of Mix-FFN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, hw[0], hw[1])).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 conv -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), hw)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class MixTransformer(nn.Module):
    """The four-stage MiT encoder; ``forward(x)`` -> the mean of the stage-4 tokens ``[B, embed_dims[-1]]``
    (through ``head`` when ``num_classes > 0``).

    ``drop_path_rate`` rises linearly over the blocks (the release trains with 0.1; it only acts
    in training mode).  Init: truncated normal (std 0.02) linear weights, zero biases, unit
    LayerNorms, He-normal (fan-out) convolutions, as in the release.
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = MIT_B2["embed_dims"],
        num_heads: tuple[int, ...] = MIT_B2["num_heads"],
        depths: tuple[int, ...] = MIT_B2["depths"],
        sr_ratios: tuple[int, ...] = MIT_B2["sr_ratios"],
        mlp_ratio: int = 4,
        drop_path_rate: float = 0.1,
        num_classes: int = 0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        chans = (in_chans, *embed_dims[:-1])
        first = 0
        for s, (dim, heads, depth, sr) in enumerate(zip(embed_dims, num_heads, depths, sr_ratios), start=1):
            kernel, stride = (7, 4) if s == 1 else (3, 2)
            self.add_module(f"patch_embed{s}", OverlapPatchEmbed(chans[s - 1], dim, kernel, stride))
            blocks = [MiTBlock(dim, heads, sr, mlp_ratio, rates[first + i]) for i in range(depth)]
            self.add_module(f"block{s}", nn.ModuleList(blocks))
            self.add_module(f"norm{s}", nn.LayerNorm(dim, eps=1e-6))
            first += depth
        self.num_stages = len(embed_dims)
        self.num_features = embed_dims[-1]
        self.num_classes = num_classes
        if num_classes:
            self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-4 tokens after ``norm4``: ``[B, h*w, embed_dims[-1]]`` (``h, w`` = input / 32)."""
        b = x.shape[0]
        for s in range(1, self.num_stages + 1):
            x, hw = getattr(self, f"patch_embed{s}")(x)
            for blk in getattr(self, f"block{s}"):
                x = blk(x, hw)
            x = getattr(self, f"norm{s}")(x)
            if s < self.num_stages:
                x = x.transpose(1, 2).reshape(b, -1, hw[0], hw[1])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_features(x).mean(dim=1)
        return self.head(pooled) if self.num_classes else pooled


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        nn.init.zeros_(m.bias)


def mit_b2_model(num_classes: int = 0, device: str | torch.device | None = None) -> MixTransformer:
    """MiT-B2 (24.2 M parameters without head); ``device="meta"`` skips the random init."""
    if device is None:
        return MixTransformer(**MIT_B2, num_classes=num_classes)
    with torch.device(device):
        return MixTransformer(**MIT_B2, num_classes=num_classes)
