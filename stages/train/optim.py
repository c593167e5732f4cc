"""AdamP (Heo et al., ICLR 2021) on PyTorch's fused Adam kernel: the same updates as the
``adamp`` package's ``AdamP``, without its per-parameter Python loop of ~20 small ops. On the
CPU a weight that fails the projection test is updated with the others' fused AdamW call; on a
GPU the test is never read on the host (no synchronisation): the projection is branch-free.

AdamP = Adam whose update ``perturb = m_hat / (sqrt(v_hat) + eps)`` of a weight tensor (ndim > 1)
loses its radial component when the weight looks scale-invariant: if every channel's
|cos(grad_c, w_c)| < delta / sqrt(fan_in) (else, the whole layer's |cos(grad, w)| <
delta / sqrt(numel)), ``perturb -= w_n <w_n, perturb>`` with w_n = w / (||w|| + eps) per channel
(else per layer), and the weight decay is scaled by ``wd_ratio``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.optim import Optimizer


def _row_cosine(dot: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor, eps: float) -> torch.Tensor:
    """|cos| from a dot product and squared norms, each norm clamped at eps (F.cosine_similarity)."""
    return dot.abs() / (sq_a.sqrt().clamp_min(eps) * sq_b.sqrt().clamp_min(eps))


def _row_dot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    return torch.mul(a, b, out=scratch).sum(1)


def scale_invariance(
    p: torch.Tensor, grad: torch.Tensor, delta: float, eps: float, scratch: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdamP's test of whether a weight ``p`` (rows = output channels) looks scale-invariant:
    (by_channel, by_layer) as 0-d bools, decided without leaving the device, and the rows'
    squared norms (which :func:`radial_coefficients` reuses). Channel view first, layer view
    second, as AdamP: by_layer is only consulted where by_channel is false."""
    w = p.reshape(len(p), -1)
    g = grad.reshape(len(p), -1)
    tmp = torch.empty_like(w) if scratch is None else scratch[: w.numel()].view_as(w)
    dot_gw = _row_dot(g, w, tmp)
    sq_g = torch.linalg.vector_norm(g, dim=1).pow_(2)
    sq_w = torch.linalg.vector_norm(w, dim=1).pow_(2)
    by_channel = _row_cosine(dot_gw, sq_g, sq_w, eps).max() < delta / math.sqrt(w.shape[1])
    by_layer = _row_cosine(dot_gw.sum(), sq_g.sum(), sq_w.sum(), eps) < delta / math.sqrt(w.numel())
    return by_channel, by_layer, sq_w


def radial_coefficients(
    p: torch.Tensor,
    perturb: torch.Tensor,
    invariance: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    eps: float,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """AdamP's projection of ``perturb`` for a weight ``p`` found scale-invariant by
    :func:`scale_invariance` (``invariance``): per-row ``coef`` such that ``perturb - p * coef``
    has no radial part in the view the test chose (all zero when neither view holds).

    ``perturb`` may be scaled by any constant (the projection is linear in it).
    """
    by_channel, by_layer, sq_w = invariance
    w = p.reshape(len(p), -1)
    u = perturb.reshape(len(p), -1)
    dot_wu = _row_dot(w, u, torch.empty_like(w) if scratch is None else scratch[: w.numel()].view_as(w))
    # perturb - w_n <w_n, perturb> = perturb - w * <w, perturb> / (||w|| + eps)^2, per channel or per layer
    coef_channel = dot_wu / (sq_w.sqrt() + eps).pow(2)
    coef_layer = dot_wu.sum() / (sq_w.sum().sqrt() + eps).pow(2)
    return torch.where(by_channel, coef_channel, torch.where(by_layer, coef_layer, 0.0))


def _host_decides(device: torch.device) -> bool:
    """Whether the projection test may be read on the host: free on the CPU; on a GPU it would
    synchronise every weight, so there every weight takes the branch-free path."""
    return device.type == "cpu"


def _fused(tensors: list[torch.Tensor], nesterov: bool) -> bool:
    """Whether PyTorch's fused Adam kernel (one pass per tensor, no per-op dispatch) applies."""
    dev = tensors[0].device.type
    return not nesterov and dev in ("cpu", "cuda") and len({(t.device, t.dtype) for t in tensors}) == 1


def _adam_(
    targets: list[torch.Tensor],
    states: list[dict],
    group: dict,
    step: int,
    weight_decay: float,
    grads: list[torch.Tensor] | None = None,
    step_tensor: torch.Tensor | None = None,
) -> None:
    """In place: Adam moments in ``states``, and ``targets -= lr * m_hat / (sqrt(v_hat) + eps)``
    after the decoupled decay ``targets *= 1 - lr * weight_decay`` (AdamW). ``grads`` default to
    the targets' own; with ``nesterov`` the step uses beta1 m + (1 - beta1) g for m.
    ``step_tensor``: ``step`` as a 0-d float tensor on the targets' device (made if not given)."""
    if not targets:
        return
    grads = [t.grad for t in targets] if grads is None else grads
    exp_avg = [s["exp_avg"] for s in states]
    exp_avg_sq = [s["exp_avg_sq"] for s in states]
    (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
    if _fused(targets, group["nesterov"]):
        if step_tensor is None:
            step_tensor = torch.full((), float(step), device=targets[0].device)
        steps = [step_tensor] * len(targets)
        kernel = torch._fused_adamw_ if weight_decay else torch._fused_adam_
        kernel(
            targets,
            grads,
            exp_avg,
            exp_avg_sq,
            [],
            steps,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            eps=eps,
            amsgrad=False,
            maximize=False,
        )
        return
    torch._foreach_lerp_(exp_avg, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
    torch._foreach_mul_(exp_avg_sq, beta2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sq)
    torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
    torch._foreach_add_(denom, eps)
    numer = [torch.lerp(m, g, 1 - beta1) for m, g in zip(exp_avg, grads)] if group["nesterov"] else exp_avg
    if weight_decay:
        torch._foreach_mul_(targets, 1 - lr * weight_decay)
    torch._foreach_addcdiv_(targets, numer, denom, value=-lr / (1 - beta1**step))


class AdamP(Optimizer):
    """Drop-in for ``adamp.AdamP`` (same arguments, same state keys: step, exp_avg, exp_avg_sq)."""

    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1, nesterov=False
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio, nesterov=nesterov
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_step: dict[int, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                by_step[state["step"]].append(p)
            for step, params in by_step.items():  # one bucket unless some parameters skipped steps
                self._update(group, step, params)
        return loss

    def _update(self, group: dict, step: int, params: list[torch.Tensor]) -> None:
        lr, eps, wd, delta = group["lr"], group["eps"], group["weight_decay"], group["delta"]
        step_tensor = torch.full((), float(step), device=params[0].device)
        # biases and norm scales are never projected, nor are weights that fail the test: their
        # AdamP update is AdamW's, made for all of them at the end in one fused call
        plain = [p for p in params if p.dim() <= 1]
        weights = [p for p in params if p.dim() > 1]
        scratch = self._scratch(weights) if weights else None
        for p in weights:  # one weight at a time, so that its tensors stay in cache through its passes
            test = scale_invariance(p, p.grad, delta, eps, scratch)
            projected = test[0] | test[1]
            if _host_decides(p.device) and not bool(projected):
                plain.append(p)
                continue
            # the Adam step u = -lr * m_hat / (sqrt(v_hat) + eps) into a zeroed buffer, then
            # p <- p (1 - lr wd r) + (u - p coef): u without its radial part p coef, r = wd_ratio
            u = self._buffer(p)
            u.zero_()
            _adam_([u], [self.state[p]], group, step, weight_decay=0.0, grads=[p.grad], step_tensor=step_tensor)
            coef = radial_coefficients(p, u, test, eps, scratch)
            decay = lr * wd * torch.where(projected, group["wd_ratio"], 1.0)
            scale = (coef + decay - 1.0).view(-1, *[1] * (p.dim() - 1))
            torch.addcmul(u, p, scale, value=-1.0, out=p)  # u + p (1 - coef - decay), one pass
        _adam_(plain, [self.state[p] for p in plain], group, step, weight_decay=wd, step_tensor=step_tensor)

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        """A work buffer shaped like ``p``, kept across steps (not part of the optimiser state)."""
        if not hasattr(self, "_work"):
            self._work: dict[int, torch.Tensor] = {}
        if id(p) not in self._work:
            self._work[id(p)] = torch.empty_like(p, memory_format=torch.contiguous_format)
        return self._work[id(p)]

    def _scratch(self, params: list[torch.Tensor]) -> torch.Tensor:
        n = max((p.numel() for p in params if p.dim() > 1), default=0)
        buf = getattr(self, "_scratch_buf", None)
        if buf is None or buf.numel() < n or buf.device != params[0].device or buf.dtype != params[0].dtype:
            buf = self._scratch_buf = torch.empty(n, dtype=params[0].dtype, device=params[0].device)
        return buf
