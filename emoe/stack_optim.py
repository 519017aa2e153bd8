"""Adam over stacked parameters (leading member dimension) with each member's own rate, weight decay and
clipping, and per-member views of its state in ``torch.optim.Adam``'s ``state_dict`` format.

The arithmetic is that of ``torch.optim.Adam`` (``amsgrad=False``, L2 weight decay added to the gradient):
m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2; p -= lr / (1 - beta1^t) * m / (sqrt(v) /
sqrt(1 - beta2^t) + eps), computed per member from its own step count and learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from emoe.config import TrainConfig

__all__ = ["StackedAdam"]

BETAS = (0.9, 0.999)
EPS = 1e-8


class StackedAdam:
    """Adam for parameters shaped (K, ...); ``lrs`` (one float per member) is set by the caller each epoch."""

    def __init__(self, params: dict[str, torch.Tensor], trains: list[TrainConfig], *, fused_format: bool):
        self.names = list(params)
        self.params = params
        self.lrs = [t.lr for t in trains]
        self.weight_decay = [t.weight_decay for t in trains]
        self.grad_clip = [t.grad_clip for t in trains]
        self.steps = [0 for _ in trains]
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.fused_format = fused_format

    def _per_member(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def grad_norms(self) -> torch.Tensor:
        """(K,) global gradient norm per member (norm of the per-tensor norms, as ``get_total_norm``)."""
        norms = [p.grad.flatten(1).norm(dim=1) for p in self.params.values() if p.grad is not None]
        if not norms:
            return torch.zeros(len(self.lrs))
        return torch.stack(norms, dim=1).norm(dim=1)

    @torch.no_grad()
    def clip(self, norms: torch.Tensor) -> None:
        """Scale each clipped member's gradients by min(1, clip / (norm + 1e-6)) (``clip_grads_with_norm_``)."""
        if all(c is None for c in self.grad_clip):
            return
        limit = torch.tensor([math.inf if c is None else c for c in self.grad_clip], dtype=norms.dtype,
                             device=norms.device)
        coef = torch.where(torch.isinf(limit), torch.ones_like(norms), (limit / (norms + 1e-6)).clamp(max=1.0))
        for p in self.params.values():
            if p.grad is not None:
                p.grad.mul_(coef.to(p.dtype).view(-1, *([1] * (p.ndim - 1))))

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = BETAS
        self.steps = [s + 1 for s in self.steps]
        step_size = [lr / (1 - beta1 ** s) for lr, s in zip(self.lrs, self.steps)]
        bc2_sqrt = [math.sqrt(1 - beta2 ** s) for s in self.steps]
        for n, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            if any(self.weight_decay):
                g = g.add(p * self._per_member(self.weight_decay, p))
            m, v = self.exp_avg[n], self.exp_avg_sq[n]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / self._per_member(bc2_sqrt, p)).add_(EPS)
            p.addcmul_(m / denom, -self._per_member(step_size, p))

    def keep(self, index: list[int], params: dict[str, torch.Tensor]) -> None:
        """Keep the members at ``index``; ``params`` are the new (already selected) parameter tensors."""
        sel = torch.tensor(index, dtype=torch.long, device=next(iter(params.values())).device)
        self.params = params
        self.exp_avg = {n: t.index_select(0, sel) for n, t in self.exp_avg.items()}
        self.exp_avg_sq = {n: t.index_select(0, sel) for n, t in self.exp_avg_sq.items()}
        for attr in ("lrs", "weight_decay", "grad_clip", "steps"):
            setattr(self, attr, [getattr(self, attr)[i] for i in index])

    def member_state(self, k: int) -> dict[str, Any]:
        """Member k's state as ``torch.optim.Adam(...).state_dict()`` (parameters in model order)."""
        impl: dict[str, Any] = {"fused": True} if self.fused_format else {"foreach": False}
        group = torch.optim.Adam([torch.zeros(1)], lr=self.lrs[k], weight_decay=self.weight_decay[k],
                                 **impl).state_dict()["param_groups"][0]
        group = {**group, "params": list(range(len(self.names)))}
        step = torch.tensor(float(self.steps[k]), dtype=torch.float32)
        state = {i: {"step": step.clone(), "exp_avg": self.exp_avg[n][k], "exp_avg_sq": self.exp_avg_sq[n][k]}
                 for i, n in enumerate(self.names) if self.steps[k] > 0}
        return {"state": state, "param_groups": [group]}

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, Any]) -> None:
        """Fill member k from an Adam ``state_dict`` of a run with the same parameters (e.g. ``fit``'s)."""
        group = state["param_groups"][0]
        if len(group["params"]) != len(self.names):
            raise ValueError(f"optimizer state: {len(group['params'])} parameters, the model has {len(self.names)}")
        self.lrs[k] = float(group["lr"])
        steps = {int(s["step"]) for s in state["state"].values()}
        self.steps[k] = steps.pop() if steps else 0
        for i, n in enumerate(self.names):
            s = state["state"].get(i)
            self.exp_avg[n][k] = 0 if s is None else s["exp_avg"]
            self.exp_avg_sq[n][k] = 0 if s is None else s["exp_avg_sq"]
