"""Training loop: resume equals an uninterrupted run; gradients reach every head; augmentations."""

import numpy as np
import pytest
import torch

from stages.config import TrainParams
from stages.train.augment import random_resized_views
from stages.train.loop import cosine_lr, stml_loss, train_stml
from stages.train.model import TeacherModel, build_student

CFG = TrainParams(
    steps=4, queries=2, neighbours=3, knn_refresh=2, input_size=32, embed_dim=16,
    teacher_dim=32, checkpoint_every=2, batch_embed=64, ema=0.9,
)


@pytest.fixture(scope="module")
def crops():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(24, 3, 32, 32, generator=g) * 255).to(torch.uint8)


def run(tmp_path, crops, stop_after=None):
    return train_stml(CFG, crops, np.zeros(len(crops), int), 0, tmp_path / "ckpt.pt", tmp_path / "log.tsv", "fp", stop_after)


def test_resume_equals_uninterrupted_run(tmp_path, crops):
    (tmp_path / "a").mkdir()
    full = run(tmp_path / "a", crops)
    (tmp_path / "b").mkdir()
    partial = run(tmp_path / "b", crops, stop_after=2)
    assert partial.resumed_from == 0
    resumed = run(tmp_path / "b", crops)
    assert resumed.resumed_from == 2
    for (k, a), (_, b) in zip(full.student.state_dict().items(), resumed.student.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    log_a = (tmp_path / "a" / "log.tsv").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.tsv").read_text().splitlines()
    assert log_a == log_b and len(log_a) == 1 + CFG.steps


def test_checkpoint_of_other_params_is_not_resumed(tmp_path, crops):
    run(tmp_path, crops, stop_after=2)
    res = train_stml(CFG, crops, np.zeros(len(crops), int), 0, tmp_path / "ckpt.pt", tmp_path / "log.tsv", "other", 2)
    assert res.resumed_from == 0


def test_gradients_reach_backbone_and_both_layers(crops):
    student = build_student(CFG.backbone, 1, CFG.teacher_dim, CFG.embed_dim, CFG.input_size).train()
    teacher = TeacherModel(student).eval()
    x = crops[:6].float() / 255
    views = random_resized_views(x, 2, CFG.aug_scale, torch.Generator().manual_seed(0), CFG.input_size)
    terms = stml_loss(student, teacher, views, CFG)
    terms["loss"].backward()
    head = student.heads[0]
    for p in (head.h.weight, head.l.weight, next(student.backbone.parameters())):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_views_shape_range_and_determinism(crops):
    x = crops[:5].float() / 255
    a = random_resized_views(x, 2, (0.5, 1.0), torch.Generator().manual_seed(1), 24)
    b = random_resized_views(x, 2, (0.5, 1.0), torch.Generator().manual_seed(1), 24)
    assert a.shape == (10, 3, 24, 24) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a[:5], a[5:])  # the two views differ


def test_cosine_schedule():
    assert cosine_lr(0, 10, 0) == pytest.approx(1.0)
    assert cosine_lr(5, 10, 0) == pytest.approx(0.5)
    assert cosine_lr(10, 10, 0) == pytest.approx(0.0)
    assert cosine_lr(0, 10, 2) == pytest.approx(0.5)
