"""Per-backbone options of params.yaml (``backbone_options``) and the registry's default learning rates."""

from __future__ import annotations

import pytest
import torch

from stages.backbones import BACKBONES, build_from_options, check_init, check_options, default_lr, learning_rate, lookup
from stages.config import BackboneOptions, Params, ParamsError, load_params
from stages.errors import UserError


def test_default_learning_rates_are_the_papers():
    # paper IV-A: 1e-4 for GoogLeNet, 3e-5 for MiT-B2 and ViT-B/16; the tiny CPU default keeps 3e-4
    assert default_lr("googlenet") == 1e-4
    assert default_lr("mit_b2") == 3e-5 and default_lr("vit_b16") == 3e-5
    assert default_lr("efficientnet_lite0") == 3e-4
    assert default_lr("resnet50") == 1e-4 and default_lr("timm-resnet18") == 1e-4
    assert learning_rate("vit_b16", None) == 3e-5
    assert learning_rate("vit_b16", BackboneOptions(init="clip")) == 3e-5
    assert learning_rate("vit_b16", BackboneOptions(lr=1e-5)) == 1e-5


def test_inits_per_backbone():
    assert lookup("vit_b16").inits == ("mocov3", "clip", "imagenet", "none")
    for name in set(BACKBONES) - {"vit_b16"}:
        assert lookup(name).inits == ("imagenet", "none")
    assert check_init("vit_b16", None) == "mocov3" and check_init("googlenet", None) == "imagenet"
    with pytest.raises(ValueError, match="valid: imagenet, none"):
        check_init("mit_b2", "clip")


def _params(tmp_path, text: str) -> Params:
    """Validated as `python -m stages params --params` does: the schema, then every backbone entry."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    check_options(params.backbone_options)
    return params


def test_params_backbone_options_validated(tmp_path):
    options = "  vit_b16: {init: clip, weights: w/ViT-B-16.pt, lr: 1.0e-5}\n  timm-resnet18: {init: none}\n"
    p = _params(tmp_path, "backbone_options:\n" + options)
    assert p.backbone_options["vit_b16"] == BackboneOptions(weights="w/ViT-B-16.pt", init="clip", lr=1e-5)
    assert Params().backbone_options == {}

    with pytest.raises(UserError) as err:
        _params(tmp_path, "backbone_options:\n  vgg16: {lr: 1.0e-4}\n")
    assert "backbone_options" in str(err.value) and "unknown backbone 'vgg16'" in str(err.value)
    assert "vit_b16" in str(err.value)  # lists the valid names
    with pytest.raises(UserError, match="has no init 'clip'"):
        _params(tmp_path, "backbone_options:\n  googlenet: {init: clip}\n")
    with pytest.raises(ParamsError, match="backbone_options.mit_b2.lr"):
        _params(tmp_path, "backbone_options:\n  mit_b2: {lr: 0}\n")
    with pytest.raises(ParamsError, match="backbone_options.mit_b2.weight: unknown key"):
        _params(tmp_path, "backbone_options:\n  mit_b2: {weight: x.pth}\n")


@torch.no_grad()
def test_build_from_options(tmp_path):
    net = build_from_options("timm-resnet18", BackboneOptions(init="none"))
    assert net.spec.init == "none" and net.spec.feature_dim == 512
    path = tmp_path / "resnet18.pth"
    torch.save(net.model.state_dict(), path)
    opts = BackboneOptions(weights=str(path))
    loaded = build_from_options("timm-resnet18", opts)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), net(x))
    # pretrained=False: same architecture and normalisation, the file is not read
    again = build_from_options("timm-resnet18", BackboneOptions(weights=str(tmp_path / "gone.pth")), pretrained=False)
    assert again.spec == loaded.spec
    with pytest.raises(FileNotFoundError, match="gone.pth"):
        build_from_options("timm-resnet18", BackboneOptions(weights=str(tmp_path / "gone.pth")))
    # a pretrained init with no file is refused with the params key to set
    with pytest.raises(ValueError, match=r"backbone_options\.mit_b2\.weights"):
        build_from_options("mit_b2", None)
    assert build_from_options("efficientnet_lite0").spec.init == "imagenet"  # the packaged weights


def test_learning_rate_precedence_options_then_fallback_then_default():
    assert learning_rate("googlenet", BackboneOptions(lr=2e-5), fallback=7e-4) == 2e-5
    assert learning_rate("googlenet", BackboneOptions(), fallback=7e-4) == 7e-4
    assert learning_rate("googlenet", None) == 1e-4
