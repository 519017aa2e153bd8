"""Adam over stacked parameters (leading member dimension): each member's slices are stepped by its own
``torch.optim.Adam`` (``emoe.dynamo_free.Adam``), built as ``emoe.train.make_optimizer`` builds a run's
(fused on the fast path, else the per-tensor loop), so a member's update, gradient norm and clipping are
those of its run alone, bit for bit, and its state is that run's ``state_dict``.

The member optimisers hold views of the stacked tensors (``p[k]``); their gradients are bound to views of
the stacked gradients before each use. A fused step is a handful of kernels per member whatever the
number of tensors, where stepping each stacked tensor with per-member scalars took about ten per tensor.
"""

from __future__ import annotations

from typing import Any

import torch

from emoe.config import TrainConfig
from emoe.dynamo_free import Adam

__all__ = ["StackedAdam"]


class StackedAdam:
    """Adam for parameters shaped (K, ...); ``lrs`` (one float per member) is set by the caller each epoch."""

    def __init__(self, params: dict[str, torch.Tensor], trains: list[TrainConfig], *, fused: bool):
        self.names = list(params)
        self.params = params
        self.grad_clip = [t.grad_clip for t in trains]
        self.fast = fused  # fused Adam and foreach norms (train.fast_path), else the per-tensor loops
        impl: dict[str, Any] = {"fused": True} if fused else {"foreach": False}
        self.optims = [Adam(self._views(k), lr=t.lr, weight_decay=t.weight_decay, **impl)
                       for k, t in enumerate(trains)]

    def _views(self, k: int) -> list[torch.Tensor]:
        return [p.detach()[k] for p in self.params.values()]

    def _bound(self, k: int) -> list[torch.Tensor]:
        """Member k's parameter views, each with ``.grad`` set to its slice of the stacked gradient."""
        views = self.optims[k].param_groups[0]["params"]
        for v, p in zip(views, self.params.values()):
            v.grad = None if p.grad is None else p.grad[k]
        return views

    @property
    def lrs(self) -> list[float]:
        return [float(o.param_groups[0]["lr"]) for o in self.optims]

    @lrs.setter
    def lrs(self, values: list[float]) -> None:
        if len(values) != len(self.optims):
            raise ValueError(f"StackedAdam: {len(values)} learning rates for {len(self.optims)} members")
        for o, lr in zip(self.optims, values):
            o.param_groups[0]["lr"] = lr

    def set_lr(self, k: int, lr: float) -> None:
        """Member k's learning rate (e.g. after its plateau scheduler cut it)."""
        self.optims[k].param_groups[0]["lr"] = lr

    def zero_grad(self) -> None:
        """Drop the stacked gradients and the members' views of them (nothing keeps them alive)."""
        for p in self.params.values():
            p.grad = None
        for o in self.optims:
            o.zero_grad(set_to_none=True)

    def grad_norms(self) -> torch.Tensor:
        """(K,) global gradient norm per member: ``get_total_norm`` of its gradients, as its run computes it."""
        norms = []
        for k in range(len(self.optims)):
            grads = [v.grad for v in self._bound(k) if v.grad is not None]
            norms.append(torch.nn.utils.get_total_norm(grads, foreach=self.fast) if grads
                         else torch.zeros((), device=next(iter(self.params.values())).device))
        return torch.stack(norms)

    @torch.no_grad()
    def clip(self, norms: torch.Tensor) -> None:
        """Clip each clipping member's gradients with its norm (``clip_grads_with_norm_``, as its run does)."""
        for k, limit in enumerate(self.grad_clip):
            if limit is not None:
                views = [v for v in self._bound(k) if v.grad is not None]
                if views:
                    torch.nn.utils.clip_grads_with_norm_(views, limit, norms[k], foreach=self.fast)

    def step(self) -> None:
        for k, o in enumerate(self.optims):
            self._bound(k)
            o.step()

    def keep(self, index: list[int], params: dict[str, torch.Tensor]) -> None:
        """Keep the members at ``index``; ``params`` are the new (already selected) parameter tensors."""
        self.params = params
        kept = [self.optims[i] for i in index]
        self.grad_clip = [self.grad_clip[i] for i in index]
        self.optims = []
        for k, old in enumerate(kept):
            group = {key: value for key, value in old.param_groups[0].items() if key != "params"}
            new = Adam(self._views(k), **group)
            new.load_state_dict(old.state_dict())  # the same state tensors, now keyed by the new views
            self.optims.append(new)

    def member_state(self, k: int) -> dict[str, Any]:
        """Member k's state: its run's ``torch.optim.Adam(...).state_dict()`` (parameters in model order)."""
        return self.optims[k].state_dict()

    def load_member_state(self, k: int, state: dict[str, Any]) -> None:
        """Fill member k from an Adam ``state_dict`` of a run with the same parameters (e.g. ``fit``'s)."""
        groups = state.get("param_groups") or [{}]
        if len(groups) != 1 or len(groups[0].get("params", [])) != len(self.names):
            n = sum(len(g.get("params", [])) for g in groups)
            raise ValueError(f"optimizer state: {n} parameters, the model has {len(self.names)}")
        # the optimiser adopts tensors that already fit; copies leave the caller's state (e.g. a checkpoint
        # that also resumes a run alone) as it was
        own = {i: {key: v.clone() if isinstance(v, torch.Tensor) else v for key, v in s.items()}
               for i, s in state["state"].items()}
        self.optims[k].load_state_dict({**state, "state": own})
