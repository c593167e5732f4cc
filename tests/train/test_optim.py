"""Multi-tensor AdamP: the same updates as the adamp package's AdamP."""

import copy

import adamp
import pytest
import torch
from torch import nn

from stages.train.optim import AdamP


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.Linear(8, 5)
    )
    return m


def _loss(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = m(x)
    # a normalised output makes the last Linear scale-invariant: AdamP projects it (layer view)
    return (nn.functional.normalize(out, dim=1) - 0.3).pow(2).sum() + out[:, :2].pow(2).mean()


@pytest.mark.parametrize("host_decides", [True, False], ids=["cpu-branch", "branch-free"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_same_updates_as_adamp_package(nesterov, host_decides, monkeypatch):
    import stages.train.optim as optim

    projected = []
    original = optim.scale_invariance
    monkeypatch.setattr(
        optim, "scale_invariance", lambda *a: projected.append(bool((r := original(*a))[0] | r[1])) or r
    )
    monkeypatch.setattr(optim, "_host_decides", lambda device: host_decides)  # the GPU's path, run on the CPU
    ours, ref = _model(), _model()
    opt_ours = AdamP(ours.parameters(), lr=1e-2, weight_decay=0.01, nesterov=nesterov)
    opt_ref = adamp.AdamP(ref.parameters(), lr=1e-2, weight_decay=0.01, nesterov=nesterov)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(6, 3, 6, 6, generator=g)
        for m, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            _loss(m, x).backward()
            opt.step()
        for (k, a), b in zip(ours.named_parameters(), ref.parameters()):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), k
    # both branches ran: projected (conv before BN, Linear before the normalisation) and not
    assert set(projected) == {True, False}
    assert opt_ours.state_dict()["state"][0].keys() == opt_ref.state_dict()["state"][0].keys()


def test_projection_removes_radial_component():
    from stages.train.optim import radial_coefficients, scale_invariance

    w = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    g = torch.tensor([[-4.0, 3.0], [0.0, 1.0]])  # orthogonal to every row: scale-invariant
    u = torch.tensor([[1.0, 1.0], [2.0, 5.0]])
    test = scale_invariance(w, g, delta=0.1, eps=0.0)
    assert bool(test[0]) and torch.equal(test[2], torch.tensor([25.0, 1.0]))  # channel view; |w_c|^2
    coef = radial_coefficients(w, u, test, eps=0.0)
    # row 1: u - w <w,u>/|w|^2 = [1,1] - [3,4]*7/25 = [0.16, -0.12]; row 2: [2,5] - [1,0]*2 = [0, 5]
    assert torch.allclose(u - w * coef[:, None], torch.tensor([[0.16, -0.12], [0.0, 5.0]]), atol=1e-6)
    test = scale_invariance(w, w.clone(), 0.1, 0.0)  # grad along w: no projection
    assert not bool(test[0] | test[1]) and torch.equal(radial_coefficients(w, u, test, 0.0), torch.zeros(2))
    # rows not orthogonal one by one, but the layer as a whole: the layer view, one coefficient
    g = torch.tensor(
        [[-4.0, 3.0], [0.5, 1.0]]
    )  # <g, w> per row: 0, 0.5 (cos 0.447); layer: 0.5 / (5.12 * 5.10) = 0.019
    test = scale_invariance(w, g, delta=0.1, eps=0.0)  # channel bound 0.1/sqrt(2) = 0.0707, layer 0.1/2 = 0.05
    assert not bool(test[0]) and bool(test[1])
    coef = radial_coefficients(w, u, test, eps=0.0)  # <w, u> / |w|^2 = (7 + 2) / 26
    assert torch.allclose(coef, torch.full((2,), 9 / 26))


def test_state_round_trip():
    m = _model()
    opt = AdamP(m.parameters(), lr=1e-2)
    _loss(m, torch.randn(2, 3, 6, 6)).backward()
    opt.step()
    clone = copy.deepcopy(m)
    opt2 = AdamP(clone.parameters(), lr=1e-2)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state_dict()["state"][0]["step"] == 1
