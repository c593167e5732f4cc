"""Each backbone loads a checkpoint file in its publisher's key layout, written here with random
weights: NVlabs ``mit_b2.pth``, MoCo-v3 ``.pth.tar`` (pretraining and linear probe), OpenAI CLIP
(state dict and TorchScript archive), timm and torchvision files; and a checkpoint that does not
fit fails with a message naming the file and the backbone.

The layouts are written out from the publishers' code (key names and shapes), not taken from our
models.  To keep files small, every tensor is a slice of one shared random buffer (``torch.save``
stores a shared storage once), so a ViT-B checkpoint takes 16 MB instead of 350 MB.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from stages.backbones import build_backbone, imagenet_classifier

BUFFER = 1 << 22  # 4 Mi floats shared by every tensor of a file
SMALL = 64  # input side for the shape checks (every backbone accepts it)


def random_layout(shapes: dict[str, tuple[int, ...]], seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """``{key: tensor of shape}`` with random values, every tensor a view of one shared buffer
    (distinct offsets, so no two tensors are equal); tensors larger than the buffer repeat one row."""
    g = torch.Generator().manual_seed(seed)
    buf = torch.randn(BUFFER, generator=g) * scale
    out = {}
    for i, (key, shape) in enumerate(shapes.items()):
        n = math.prod(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):  # BatchNorm variances are positive
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif n <= BUFFER:
            start = (i * 104_729) % (BUFFER - n + 1)
            out[key] = buf[start : start + n].view(shape)
        else:
            out[key] = buf[: shape[-1]].expand(shape)
    return out


def vit_b_shapes(prefix: str = "", dim: int = 768, depth: int = 12, patch: int = 16, tokens: int = 197) -> dict:
    """timm-0.4-style ViT keys, as MoCo-v3's ``vits.py`` (a timm VisionTransformer) saves them."""
    s = {
        f"{prefix}cls_token": (1, 1, dim),
        f"{prefix}pos_embed": (1, tokens, dim),
        f"{prefix}patch_embed.proj.weight": (dim, 3, patch, patch),
        f"{prefix}patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        s |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
              b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
              b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
              b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
              b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
              b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)}  # fmt: skip
    return s | {f"{prefix}norm.weight": (dim,), f"{prefix}norm.bias": (dim,)}


def mocov3_projector_shapes(prefix: str, dim: int = 768, mlp: int = 4096, out: int = 256) -> dict:
    """MoCo-v3 ``_build_mlp(3, 768, 4096, 256)``:
    Linear(no bias), BN, ReLU, Linear, BN, ReLU, Linear, BN(affine=False)."""

    def bn(p: str, n: int, affine: bool = True) -> dict:
        stats = {f"{p}.running_mean": (n,), f"{p}.running_var": (n,), f"{p}.num_batches_tracked": ()}
        return ({f"{p}.weight": (n,), f"{p}.bias": (n,)} if affine else {}) | stats

    return (
        {f"{prefix}0.weight": (mlp, dim)}
        | bn(f"{prefix}1", mlp)
        | {f"{prefix}3.weight": (mlp, mlp)}
        | bn(f"{prefix}4", mlp)
        | {f"{prefix}6.weight": (out, mlp)}
        | bn(f"{prefix}7", out, affine=False)
    )


def clip_visual_shapes(width: int = 768, layers: int = 12, patch: int = 16, grid: int = 14, embed: int = 512) -> dict:
    """OpenAI ``clip.model.VisionTransformer`` keys under ``visual.`` (ViT-B/16: 14x14 patches)."""
    v = {"visual.class_embedding": (width,), "visual.positional_embedding": (grid * grid + 1, width),
         "visual.proj": (width, embed), "visual.conv1.weight": (width, 3, patch, patch),
         "visual.ln_pre.weight": (width,), "visual.ln_pre.bias": (width,)}  # fmt: skip
    for i in range(layers):
        b = f"visual.transformer.resblocks.{i}."
        v |= {b + "attn.in_proj_weight": (3 * width, width), b + "attn.in_proj_bias": (3 * width,),
              b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
              b + "ln_1.weight": (width,), b + "ln_1.bias": (width,),
              b + "mlp.c_fc.weight": (4 * width, width), b + "mlp.c_fc.bias": (4 * width,),
              b + "mlp.c_proj.weight": (width, 4 * width), b + "mlp.c_proj.bias": (width,),
              b + "ln_2.weight": (width,), b + "ln_2.bias": (width,)}  # fmt: skip
    return v | {"visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,)}


CLIP_TEXT = {"positional_embedding": (77, 512), "text_projection": (512, 512), "logit_scale": (),
             "token_embedding.weight": (49408, 512), "transformer.resblocks.0.attn.in_proj_weight": (1536, 512),
             "ln_final.weight": (512,), "ln_final.bias": (512,)}  # fmt: skip


def mit_b2_shapes(head: bool = True, depths=(3, 4, 6, 3)) -> dict:
    """NVlabs SegFormer ``mit_b2`` keys (mmseg/models/backbones/mix_transformer.py + ImageNet head)."""
    dims, srs, chans = (64, 128, 320, 512), (8, 4, 2, 1), (3, 64, 128, 320)
    s = {}
    for st in range(1, 5):
        d, sr, k = dims[st - 1], srs[st - 1], 7 if st == 1 else 3
        s |= {f"patch_embed{st}.proj.weight": (d, chans[st - 1], k, k), f"patch_embed{st}.proj.bias": (d,),
              f"patch_embed{st}.norm.weight": (d,), f"patch_embed{st}.norm.bias": (d,)}  # fmt: skip
        for i in range(depths[st - 1]):
            b = f"block{st}.{i}."
            s |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                  b + "attn.q.weight": (d, d), b + "attn.q.bias": (d,),
                  b + "attn.kv.weight": (2 * d, d), b + "attn.kv.bias": (2 * d,),
                  b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,)}  # fmt: skip
            if sr > 1:
                s |= {b + "attn.sr.weight": (d, d, sr, sr), b + "attn.sr.bias": (d,),
                      b + "attn.norm.weight": (d,), b + "attn.norm.bias": (d,)}  # fmt: skip
            s |= {b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                  b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                  b + "mlp.dwconv.dwconv.weight": (4 * d, 1, 3, 3), b + "mlp.dwconv.dwconv.bias": (4 * d,),
                  b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)}  # fmt: skip
        s |= {f"norm{st}.weight": (d,), f"norm{st}.bias": (d,)}
    return s | ({"head.weight": (1000, 512), "head.bias": (1000,)} if head else {})


def _check_error(err: pytest.ExceptionInfo, path, name: str) -> None:
    msg = str(err.value)
    assert str(path) in msg and name in msg, msg


# --- MiT-B2 -------------------------------------------------------------------------------------


@torch.no_grad()
def test_mit_b2_loads_nvlabs_checkpoint(tmp_path):
    sd = random_layout(mit_b2_shapes(), seed=1)
    path = tmp_path / "mit_b2.pth"
    torch.save(sd, path)
    net = build_backbone("mit_b2", weights=path)
    assert net.spec.feature_dim == 512 and net.spec.input_size == 224
    assert net.spec.mean == (0.485, 0.456, 0.406)
    own = net.model.state_dict()
    assert "head.weight" not in own
    assert torch.equal(own["block3.5.attn.kv.weight"], sd["block3.5.attn.kv.weight"])
    x = torch.rand(2, 3, SMALL, SMALL)
    f = net(x)
    assert f.shape == (2, 512) and torch.isfinite(f).all()
    # feature = global average of the stage-4 tokens; the classifier is the release's head on it
    tokens = net.model.forward_features(net.normalise(x))
    assert tokens.shape == (2, (SMALL // 32) ** 2, 512)
    torch.testing.assert_close(f, tokens.mean(1))
    logits = imagenet_classifier("mit_b2", weights=path)(x)
    torch.testing.assert_close(logits, F.linear(f, sd["head.weight"], sd["head.bias"]), rtol=1e-4, atol=1e-5)


def test_mit_b2_rejects_other_depths(tmp_path):
    path = tmp_path / "mit_b1.pth"  # MiT-B1 has depths 2,2,2,2 with the same widths
    torch.save(random_layout(mit_b2_shapes(depths=(2, 2, 2, 2)), seed=2), path)
    with pytest.raises(ValueError, match="missing keys") as err:
        build_backbone("mit_b2", weights=path)
    _check_error(err, path, "mit_b2")


# --- ViT-B/16: MoCo-v3 ------------------------------------------------------------------------------


def _mocov3_pretrain(tmp_path):
    enc = vit_b_shapes() | mocov3_projector_shapes("head.")
    sd = {}
    for part, seed in (("base_encoder", 3), ("momentum_encoder", 4)):
        sd |= {f"module.{part}.{k}": v for k, v in random_layout(enc, seed).items()}
    predictor = {"0.weight": (4096, 256), "1.weight": (4096,), "1.bias": (4096,), "3.weight": (256, 4096)}
    pred = {f"module.predictor.{k}": v for k, v in random_layout(predictor, 5).items()}
    ckpt = {"epoch": 300, "arch": "vit_base", "state_dict": sd | pred, "optimizer": {"state": {}, "param_groups": []}}
    path = tmp_path / "vit-b-300ep.pth.tar"
    torch.save(ckpt, path)
    return path, sd


@torch.no_grad()
def test_vit_b16_mocov3_pretrain_checkpoint_keeps_base_encoder(tmp_path):
    path, sd = _mocov3_pretrain(tmp_path)
    net = build_backbone("vit_b16", weights=path, init="mocov3")
    assert (net.spec.feature_dim, net.spec.input_size, net.spec.init) == (768, 224, "mocov3")
    assert net.spec.mean == (0.485, 0.456, 0.406) and net.spec.std == (0.229, 0.224, 0.225)
    own = net.model.state_dict()
    key = "blocks.7.attn.qkv.weight"
    assert torch.equal(own[key], sd[f"module.base_encoder.{key}"])
    assert not torch.equal(own[key], sd[f"module.momentum_encoder.{key}"])
    assert not any(k.startswith("head") for k in own)
    f = net(torch.rand(1, 3, SMALL, SMALL))  # dynamic image size: 4x4 patches
    assert f.shape == (1, 768) and torch.isfinite(f).all()
    # the projector head cannot serve as an ImageNet classifier
    with pytest.raises(ValueError, match="missing keys") as err:
        imagenet_classifier("vit_b16", weights=path, init="mocov3")
    _check_error(err, path, "vit_b16")


@torch.no_grad()
def test_vit_b16_mocov3_linear_probe_checkpoint(tmp_path):
    shapes = vit_b_shapes() | {"head.weight": (1000, 768), "head.bias": (1000,)}
    sd = {f"module.{k}": v for k, v in random_layout(shapes, 6).items()}
    path = tmp_path / "linear-vit-b-300ep.pth.tar"
    torch.save({"epoch": 90, "arch": "vit_base", "state_dict": sd, "best_acc1": torch.tensor(76.7)}, path)
    net = build_backbone("vit_b16", weights=path)  # mocov3 is vit_b16's default init
    assert net.spec.init == "mocov3"
    x = torch.rand(1, 3, SMALL, SMALL)
    f = net(x)
    assert f.shape == (1, 768)
    logits = imagenet_classifier("vit_b16", weights=path)(x)
    torch.testing.assert_close(
        logits, F.linear(f, sd["module.head.weight"], sd["module.head.bias"]), rtol=1e-4, atol=1e-5
    )


# --- ViT-B/16: CLIP -----------------------------------------------------------------------------


def clip_visual_reference(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP ``VisionTransformer.forward`` on normalised ``x``, straight from the state dict:
    patchify conv, class token, positions, ln_pre, 12 pre-norm blocks (QuickGELU), ln_post, proj."""
    v = {k[len("visual.") :]: t.float() for k, t in sd.items() if k.startswith("visual.")}
    width = v["class_embedding"].shape[0]
    h = F.conv2d(x, v["conv1.weight"], stride=v["conv1.weight"].shape[-1]).flatten(2).transpose(1, 2)
    h = torch.cat([v["class_embedding"].expand(len(x), 1, width), h], dim=1) + v["positional_embedding"]
    h = F.layer_norm(h, (width,), v["ln_pre.weight"], v["ln_pre.bias"])
    for i in range(12):
        p = f"transformer.resblocks.{i}."
        a = F.layer_norm(h, (width,), v[p + "ln_1.weight"], v[p + "ln_1.bias"]).transpose(0, 1)
        a, _ = F.multi_head_attention_forward(
            a, a, a, width, 12, v[p + "attn.in_proj_weight"], v[p + "attn.in_proj_bias"], None, None, False, 0.0,
            v[p + "attn.out_proj.weight"], v[p + "attn.out_proj.bias"], training=False, need_weights=False,
        )  # fmt: skip
        h = h + a.transpose(0, 1)
        m = F.linear(
            F.layer_norm(h, (width,), v[p + "ln_2.weight"], v[p + "ln_2.bias"]),
            v[p + "mlp.c_fc.weight"],
            v[p + "mlp.c_fc.bias"],
        )
        h = h + F.linear(m * torch.sigmoid(1.702 * m), v[p + "mlp.c_proj.weight"], v[p + "mlp.c_proj.bias"])
    return F.layer_norm(h[:, 0], (width,), v["ln_post.weight"], v["ln_post.bias"]) @ v["proj"]


class _Tree(nn.Module):
    """A TorchScript-able module holding parameters under dotted names (an OpenAI-style ``.pt``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchscript_archive(sd: dict[str, torch.Tensor], path) -> None:
    root = _Tree()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, _Tree())
            mod = getattr(mod, p)
        mod.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    torch.jit.script(root).save(str(path))


@torch.no_grad()
def test_vit_b16_clip_matches_openai_forward(tmp_path):
    sd = random_layout(clip_visual_shapes() | CLIP_TEXT, seed=7)
    path = tmp_path / "clip_vit_b16_state_dict.pt"
    torch.save(sd, path)
    net = build_backbone("vit_b16", weights=path, init="clip")
    assert (net.spec.feature_dim, net.spec.init) == (512, "clip")
    assert net.spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert net.spec.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(net(x), clip_visual_reference(sd, net.normalise(x)), rtol=1e-3, atol=1e-4)
    assert net(torch.rand(2, 3, SMALL, SMALL)).shape == (2, 512)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@torch.no_grad()
def test_vit_b16_clip_reads_openai_torchscript_archive(tmp_path):
    """OpenAI's released ``ViT-B-16.pt`` is a TorchScript archive of fp16 weights."""
    sd = random_layout(clip_visual_shapes() | {"logit_scale": ()}, seed=8)
    sd16 = {k: v.half() for k, v in sd.items()}
    path = tmp_path / "ViT-B-16.pt"
    _torchscript_archive(sd16, path)
    net = build_backbone("vit_b16", weights=path, init="clip")
    own = net.model.state_dict()
    torch.testing.assert_close(
        own["blocks.3.attn.qkv.weight"], sd16["visual.transformer.resblocks.3.attn.in_proj_weight"].float()
    )
    torch.testing.assert_close(own["head.weight"], sd16["visual.proj"].float().t())
    assert own["head.weight"].dtype == torch.float32


def test_vit_b16_clip_rejects_other_layouts(tmp_path):
    path, _ = _mocov3_pretrain(tmp_path)
    with pytest.raises(ValueError, match="visual.class_embedding") as err:
        build_backbone("vit_b16", weights=path, init="clip")
    _check_error(err, path, "vit_b16")

    b32 = tmp_path / "clip_vit_b32.pt"  # ViT-B/32: 32-px patches, 7x7 grid
    torch.save(random_layout(clip_visual_shapes(patch=32, grid=7), seed=9), b32)
    with pytest.raises(ValueError, match="shape mismatches") as err:
        build_backbone("vit_b16", weights=b32, init="clip")
    _check_error(err, b32, "vit_b16")

    clip = tmp_path / "clip.pt"  # a CLIP file where MoCo-v3 weights are expected
    torch.save(random_layout(clip_visual_shapes(), seed=10), clip)
    with pytest.raises(ValueError, match="unexpected keys") as err:
        build_backbone("vit_b16", weights=clip, init="mocov3")
    _check_error(err, clip, "vit_b16")


# --- ViT-B/16 ImageNet (timm layout), timm safetensors, torchvision GoogLeNet, timm ResNet-50 ----


@torch.no_grad()
def test_vit_b16_imagenet_timm_file_and_random_init(tmp_path):
    sd = random_layout(vit_b_shapes() | {"head.weight": (1000, 768), "head.bias": (1000,)}, 11)
    path = tmp_path / "vit_base_patch16_224.pth"
    torch.save(sd, path)
    net = build_backbone("vit_b16", weights=path, init="imagenet")
    assert (net.spec.feature_dim, net.spec.mean, net.spec.init) == (768, (0.5, 0.5, 0.5), "imagenet")
    assert torch.equal(net.model.state_dict()["pos_embed"], sd["pos_embed"])
    assert net(torch.rand(1, 3, SMALL, SMALL)).shape == (1, 768)
    with pytest.raises(ValueError, match="init 'none'"):
        build_backbone("vit_b16", weights=path, init="none")


@torch.no_grad()
def test_timm_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    src = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "model.safetensors"  # the file layout of timm's Hugging Face repositories
    save_file(src.state_dict(), path)
    net = build_backbone("timm-resnet18", weights=path)
    x = torch.rand(1, 3, SMALL, SMALL)
    torch.testing.assert_close(net(x), src.forward_head(src.forward_features(net.normalise(x)), pre_logits=True))


@torch.no_grad()
def test_googlenet_loads_torchvision_checkpoint(tmp_path):
    from torchvision.models import googlenet as tv_googlenet

    ref = tv_googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    sd = random_layout(shapes, seed=12, scale=0.2)
    path = tmp_path / "googlenet-1378be20.pth"
    torch.save(sd, path)
    net = build_backbone("googlenet", weights=path)
    assert net.spec.feature_dim == 2048
    assert torch.equal(
        net.model.state_dict()["inception5b.branch4.1.conv.weight"], sd["inception5b.branch4.1.conv.weight"]
    )
    x = torch.rand(2, 3, SMALL, SMALL)
    assert net(x).shape == (2, 2048)
    ref.load_state_dict(sd)
    ref.eval()
    torch.testing.assert_close(
        imagenet_classifier("googlenet", weights=path)(x), ref(net.normalise(x)), rtol=1e-4, atol=1e-4
    )


@torch.no_grad()
def test_resnet50_loads_timm_checkpoint(tmp_path):
    shapes = {k: tuple(v.shape) for k, v in timm.create_model("resnet50", device="meta").state_dict().items()}
    assert shapes["fc.weight"] == (1000, 2048)
    sd = random_layout(shapes, seed=13)
    path = tmp_path / "resnet50.pth"
    torch.save(sd, path)
    net = build_backbone("resnet50", weights=path)
    assert net.spec.feature_dim == 2048 and torch.equal(
        net.model.state_dict()["layer4.2.conv3.weight"], sd["layer4.2.conv3.weight"]
    )
    assert net(torch.rand(1, 3, SMALL, SMALL)).shape == (1, 2048)
    with pytest.raises(ValueError) as err:
        build_backbone("googlenet", weights=path)
    _check_error(err, path, "googlenet")
