"""A tiny randomly initialised SAM built from segment-anything's own classes (CPU, milliseconds).

``TINY_BUILDERS`` stands in for ``sam_model_registry`` (same call signature), so the real
checkpoint loading and the real automatic mask generator run in the tests.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

IMG_SIZE = 64
PATCH = 8
DIM = 32


def build_tiny_sam(checkpoint=None, embed_dim: int = DIM, depth: int = 1) -> Sam:
    grid = IMG_SIZE // PATCH
    torch.manual_seed(0)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=IMG_SIZE,
            patch_size=PATCH,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=DIM,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=False,
            window_size=0,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=DIM, image_embedding_size=(grid, grid), input_image_size=(IMG_SIZE, IMG_SIZE), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=DIM,
            transformer=TwoWayTransformer(depth=1, embedding_dim=DIM, num_heads=2, mlp_dim=64),
            num_multimask_outputs=3,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


# Two "model types" of different encoder width, to test the wrong-checkpoint message.
TINY_BUILDERS = {"vit_b": build_tiny_sam, "vit_l": partial(build_tiny_sam, embed_dim=48, depth=2)}

# Thresholds low enough that random weights produce masks.
TINY_PARAMS = {
    "model_type": "vit_b",
    "points_per_side": 8,
    "points_per_batch": 16,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 0.7,
}


def save_tiny_checkpoint(path, model_type: str = "vit_b") -> str:
    torch.save(TINY_BUILDERS[model_type]().state_dict(), path)
    return str(path)
