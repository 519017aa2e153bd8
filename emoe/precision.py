"""bf16 training that pays: bf16 working weights refreshed once per optimiser step, float32 master weights.

Under plain bf16 autocast every batch converts every float32 weight to bf16 again (on the faithful
configuration the 785 MB router weight alone), which costs more than it saves. ``BF16Weights`` keeps the
model's floating parameters in bf16 (what forward and backward read) and a float32 master copy of each
(what the optimiser updates and keeps state for). Gradients accumulate on the bf16 parameters during an
accumulation window and are moved to the masters once per window (``grads_to_master``); after the
optimiser step the bf16 weights are refreshed from the masters once (``refresh``). Checkpoints hold the
float32 masters (``state_dict``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["BF16Weights"]


class BF16Weights:
    """bf16 working copies of ``model``'s floating parameters and their float32 masters."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.names: list[str] = []
        for name, p in model.named_parameters():
            if not (p.requires_grad and p.dtype == torch.float32):
                continue
            master = p.detach().clone().requires_grad_(True)  # float32 leaf the optimiser owns
            p.data = p.data.to(torch.bfloat16)
            self.pairs.append((p, master))
            self.names.append(name)

    @property
    def masters(self) -> list[torch.Tensor]:
        """The float32 master weights, in the model's parameter order (give these to the optimiser)."""
        return [m for _, m in self.pairs]

    @torch.no_grad()
    def grads_to_master(self) -> None:
        """Add the bf16 gradients to the masters' float32 ``.grad`` (once per window) and clear them."""
        for p, m in self.pairs:
            if p.grad is None:
                continue
            if m.grad is None:
                m.grad = p.grad.float()
            else:
                m.grad.add_(p.grad)
            p.grad = None

    def zero_grad(self) -> None:
        for p, m in self.pairs:
            p.grad = None
            m.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the (just updated) masters into the bf16 working weights: one conversion per step."""
        for p, m in self.pairs:
            p.data.copy_(m)

    def state_dict(self) -> dict[str, Any]:
        """The model's state dict with the float32 masters in place of the bf16 working weights."""
        state = self.model.state_dict()
        for name, (_, m) in zip(self.names, self.pairs):
            state[name] = m.detach()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load float32 weights into the masters and refresh the working copies."""
        self.model.load_state_dict(state)  # casts into the bf16 working weights
        for name, (_, m) in zip(self.names, self.pairs):
            m.copy_(state[name])
        self.refresh()

    def restore(self) -> None:
        """Give the model back float32 parameters holding the masters (after training)."""
        for p, m in self.pairs:
            p.data = m.detach().clone()
