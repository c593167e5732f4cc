"""Loss terms against small examples computed by hand (numbers in the comments)."""

import math

import pytest
import torch

from stages.losses import relaxed_contrastive, self_distillation, teacher_weights, view_positives
from stages.losses.distances import pairwise_distance, relative_distance
from stages.losses.teacher_weights import contextual_weights, pairwise_weights

# Three unit vectors: d12 = sqrt2, d13 = 2, d23 = sqrt2.
H = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
# Another three: d12 = sqrt2, d13 = sqrt2, d23 = 2.
L = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def test_relative_distance_by_hand():
    # row means (self included): (sqrt2 + 2)/3 = 1.138071, (2 sqrt2)/3 = 0.942809
    d = relative_distance(H)
    expected = torch.tensor([[0.0, 1.242641, 1.757359], [1.5, 0.0, 1.5], [1.757359, 1.242641, 0.0]])
    assert torch.allclose(d, expected, atol=1e-5)


def test_pairwise_distance_has_finite_gradient_on_diagonal():
    x = torch.randn(5, 3, requires_grad=True)
    pairwise_distance(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_relaxed_contrastive_pull_by_hand():
    # w = 0.5 off-diagonal, delta = 1: every d > 1, so only 0.5 d^2 remains;
    # sum d^2 = 2 (1.544156 + 3.088314 + 2.25) = 13.76494, x0.5 / (3*2) = 1.147078
    w = torch.full((3, 3), 0.5)
    assert relaxed_contrastive(H, w, delta=1.0).item() == pytest.approx(1.147078, abs=1e-5)


def test_relaxed_contrastive_push_by_hand():
    # w = 0, delta = 2: sum (2 - d)^2 = 2 (0.573594 + 0.058874 + 0.25) = 1.764936, / 6 = 0.294156
    w = torch.zeros(3, 3)
    assert relaxed_contrastive(H, w, delta=2.0).item() == pytest.approx(0.294156, abs=1e-5)


def test_relaxed_contrastive_is_scale_invariant():
    w = torch.rand(4, 4)
    x = torch.randn(4, 8)
    assert relaxed_contrastive(x, w).item() == pytest.approx(relaxed_contrastive(7 * x, w).item(), rel=1e-5)


def test_self_distillation_by_hand():
    # STML: the softmax runs over every j, the row itself (d_ii = 0) included.
    # d_H rows [0 1.242641 1.757359], [1.5 0 1.5], [1.757359 1.242641 0];
    # d_L rows [0 1.5 1.5], [1.242641 0 1.757359], [1.242641 1.757359 0]
    # P rows (softmax of -d_H): [.684406 .197534 .118060], [.154281 .691438 .154281], [.118060 .197534 .684406]
    # Q rows (softmax of -d_L): [.691438 .154281 .154281], [.197534 .684406 .118060], [.197534 .118060 .684406]
    # KL rows: 0.010231, 0.010223, 0.040907 -> sum 0.061360 / 3 = 0.020453
    assert self_distillation(H, L).item() == pytest.approx(0.020453, abs=1e-5)


def test_self_distillation_zero_when_equal_and_h_detached():
    h = torch.randn(6, 4, requires_grad=True)
    l = h.detach().clone().requires_grad_(True)
    loss = self_distillation(h, l)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    self_distillation(h, torch.randn(6, 4, requires_grad=True)).backward()
    assert h.grad is None  # h teaches: no gradient flows into it


def test_pairwise_weights_by_hand():
    # ||t1 - t2||^2 = 2 -> exp(-2/3) = 0.513417; ||t1 - t3||^2 = 4 -> exp(-4/3) = 0.263597
    w = pairwise_weights(H, sigma=3.0)
    assert w[0, 1].item() == pytest.approx(math.exp(-2 / 3), abs=1e-6)
    assert w[0, 2].item() == pytest.approx(0.263597, abs=1e-6)
    assert torch.allclose(torch.diag(w), torch.ones(3))


def test_contextual_weights_two_clusters():
    # Two tight clusters of 3: k = 3 neighbourhoods are the clusters themselves, so every
    # mutual-neighbour overlap inside a cluster is 3/3 = 1 and across clusters 0.
    t = torch.tensor([[1, 0], [0.99, 0.01], [0.98, 0.02], [0, 1], [0.01, 0.99], [0.02, 0.98]])
    w_c = contextual_weights(pairwise_weights(t, 3.0), k=3)
    block = torch.zeros(6, 6)
    block[:3, :3] = 1
    block[3:, 3:] = 1
    assert torch.allclose(w_c, block)


def test_teacher_weights_views_are_neighbours_not_forced_to_one():
    """STML: the views of a crop rank first in each other's neighbour lists (so their contextual
    weight is positive), but their weight stays the teacher's (W_P + W_C) / 2."""
    t = torch.randn(8, 5)
    pos = view_positives(4, 2)
    w = teacher_weights(t, 3.0, 3, pos)
    w_p = pairwise_weights(t, 3.0)
    w_c = contextual_weights(w_p, 3, None, pos)
    assert torch.allclose(w, w.T, atol=1e-6)
    assert torch.allclose(w, (w_p + w_c) / 2, atol=1e-6)
    assert (w_c[pos] > 0).all() and not (w[pos & ~torch.eye(8, dtype=torch.bool)] == 1).any()
    assert ((w >= 0) & (w <= 1)).all()
    assert pos[0, 4] and pos[4, 0] and not pos[0, 1]


def test_ckd_zero_for_identical_heads_and_by_hand():
    from stages.losses import ckd_pair, collaborative_distillation

    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.randn(4, 2)
    assert ckd_pair(x, x.clone(), c, 0.1).item() == pytest.approx(0.0, abs=1e-7)
    # a = (1,0): sims (1, 0), tau = 1 -> S_a = softmax(1, 0) = (0.731059, 0.268941)
    # b = (0,1): S_b = (0.268941, 0.731059); KL = (0.731059 - 0.268941) * ln(0.731059/0.268941)
    #   = 0.462117 * 1.0 = 0.462117
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert ckd_pair(a, b, c, 1.0).item() == pytest.approx(0.462117, abs=1e-5)
    # eq. 2 averages the pairs: (0.462117 + 0) / 2; emb rows 0: a, 1: b; pair 0 = (a, b), pair 1 = (a, a)
    emb = torch.cat([a, b])
    rows_a, rows_b, pair = torch.tensor([0, 0]), torch.tensor([1, 0]), torch.tensor([0, 1])
    assert collaborative_distillation(emb, rows_a, rows_b, pair, 2, c, 1.0).item() == pytest.approx(0.231059, abs=1e-5)
    # a third pair without shared crops adds 0: 0.462117 / 3
    assert collaborative_distillation(emb, rows_a, rows_b, pair, 3, c, 1.0).item() == pytest.approx(0.154039, abs=1e-5)
    assert collaborative_distillation(emb, rows_a[:0], rows_b[:0], pair[:0], 0, c, 1.0).item() == 0.0


def test_nt_xent_by_hand():
    from stages.losses import nt_xent

    # two crops, two views: z = e1, e1, e2, e2 (views stacked: crop0, crop1, crop0, crop1 ->
    # rows 0: e1, 1: e2, 2: e1, 3: e2). Anchor 0: positive row 2 (s = 1), negatives rows 1, 3 (s = 0).
    # tau = 1: loss = -log(e / (e + 2)) = log(1 + 2/e) = 0.551445 for every anchor.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(z, 2, 1.0).item() == pytest.approx(0.551445, abs=1e-5)


def test_anchor_nt_xent_by_hand():
    from stages.losses import anchor_nt_xent

    anchors = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # normalised inside: a0 = [1, 0], a1 = [0, 1]
    views = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 5.0], [1.0, 1.0]])  # view 1 of crops 0, 1; view 2 of 0, 1
    # per view -log softmax over anchors at its own crop, tau = 1:
    # log(1 + e^-1), log(1 + e^-1), log(1 + e), log 2  ->  mean 0.6582331
    assert anchor_nt_xent(views, anchors, 1.0).item() == pytest.approx(0.6582331, abs=1e-6)
    # tau = 0.5 doubles the logits: log(1 + e^-2), log(1 + e^-2), log(1 + e^2), log 2 -> mean
    expected = (2 * math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2)) + math.log(2)) / 4
    assert anchor_nt_xent(views, anchors, 0.5).item() == pytest.approx(expected, abs=1e-6)
    views.requires_grad_(True)
    anchors.requires_grad_(True)
    anchor_nt_xent(views, anchors, 1.0).backward()
    assert views.grad.abs().sum() > 0 and anchors.grad.abs().sum() > 0  # both sides learn


def _padded(sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sets of different sizes padded to the largest by repeating their first row, and the mask."""
    n = max(len(x) for x in sets)
    batch = torch.stack([torch.cat([x, x[:1].expand(n - len(x), -1)]) for x in sets])
    valid = torch.stack([torch.arange(n) < len(x) for x in sets])
    return batch, valid


@pytest.mark.parametrize("k", [2, 4, 9])  # 9: more neighbours than the smaller sets have rows
def test_padded_sets_equal_one_set_at_a_time(k):
    g = torch.Generator().manual_seed(3)
    sizes = (8, 3, 6)
    hs = [torch.randn(n, 5, generator=g, requires_grad=True) for n in sizes]
    ls = [torch.randn(n, 4, generator=g, requires_grad=True) for n in sizes]
    ts = [torch.randn(n, 6, generator=g) for n in sizes]
    h, valid = _padded(hs)
    l, _ = _padded(ls)
    t, _ = _padded(ts)
    w = teacher_weights(t, 3.0, k, None, valid)
    rc = relaxed_contrastive(h, w, 1.0, valid)
    sd = self_distillation(h, l, valid)
    assert rc.shape == sd.shape == (3,)
    for i, n in enumerate(sizes):
        w_i = teacher_weights(ts[i], 3.0, k)
        assert torch.allclose(w[i, :n, :n], w_i, atol=1e-6)
        assert rc[i].item() == pytest.approx(relaxed_contrastive(hs[i], w_i, 1.0).item(), abs=1e-6)
        assert sd[i].item() == pytest.approx(self_distillation(hs[i], ls[i]).item(), abs=1e-6)
    grads = torch.autograd.grad((rc + sd).sum(), hs + ls)
    for i in range(3):
        loss_i = relaxed_contrastive(hs[i], teacher_weights(ts[i], 3.0, k), 1.0) + self_distillation(hs[i], ls[i])
        for got, ref in zip(grads[i::3], torch.autograd.grad(loss_i, [hs[i], ls[i]])):
            assert torch.allclose(got, ref, atol=1e-6)
