"""Our MiT against an independent port of the NVlabs code (segmentation-models-pytorch), on a
small configuration with the same keys: same tensors in, same stage-4 map out."""

from __future__ import annotations

from functools import partial

import torch
from segmentation_models_pytorch.encoders.mix_transformer import LayerNorm, MixVisionTransformer

from stages.backbones.mix_transformer import MIT_B2, MixTransformer, mit_b2_model

SMALL = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1), sr_ratios=(8, 4, 2, 1))


@torch.no_grad()
def test_mit_matches_reference_port():
    torch.manual_seed(0)
    ref = MixVisionTransformer(
        qkv_bias=True, norm_layer=partial(LayerNorm, eps=1e-6), mlp_ratios=[4] * 4,
        **{k: list(v) for k, v in SMALL.items()},
    ).eval()  # fmt: skip
    ours = MixTransformer(**SMALL).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 96)  # non-square: stage maps 16x24 -> 2x3
    ref_map = ref.forward_features(x)[-1]  # [B, C, h, w]
    assert ref_map.shape == (2, 64, 2, 3)
    torch.testing.assert_close(ours.forward_features(x), ref_map.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours(x), ref_map.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_mit_b2_size():
    model = mit_b2_model(device="meta")
    assert MIT_B2["depths"] == (3, 4, 6, 3) and model.num_features == 512
    assert sum(p.numel() for p in model.parameters()) == 24_196_288  # 24.2 M: SegFormer's MiT-B2 encoder
    assert len(model.state_dict()) == 332  # 334 with the ImageNet head (head.weight, head.bias)
