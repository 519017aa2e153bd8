"""The Mixture-of-Modality-Experts router: per-sample modality weights w = (w_l, w_v, w_a).

A learned router looks at the raw inputs (before projection or dropout), either flattened at text length
(the faithful reference; unaligned vision/audio first mapped to that length by a learned Linear over the
time axis) or mean-pooled over time (a much cheaper study option). Constant routers give uniform or fixed
weights for ablations.

The flattened router's first layer is huge (~196M weights on MOSI) while a batch is small, so its weight
gradient (a rank-16 update of the whole matrix per batch) costs more than the rest of the step. With
deferral on, backward records (grad_out, input) and ``flush_grad`` adds their product for a whole
accumulation window in one matrix product: the same sum, written once per window. Its forward product
can be batched the same way: the weights do not change inside a window and the flattened input is the
raw data (no parameters before it on aligned data), so ``prime`` multiplies the whole window's inputs by
the weight once (the matrix is read once instead of once per batch) and each batch's forward then takes
its rows. The products travel explicitly (``prime`` returns them, the forward takes them), so nothing
is matched by tensor identity and a captured step can hold them in static buffers.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConstantRouter", "DeferredWeightGradLinear", "LearnedRouter", "RouterPrimed", "router_in_features"]

Pooling = Literal["flatten", "mean"]
#: A batch's primed first-layer input and product: (x (B, in), x W^T (B, hidden)).
RouterPrimed = tuple[torch.Tensor, torch.Tensor]


def router_in_features(pooling: Pooling, *, d_text: int, d_vision: int, d_audio: int, len_text: int) -> int:
    """Width of the router's input: L_t * (d_t + d_v + d_a) flattened, or d_t + d_v + d_a mean-pooled."""
    width = d_text + d_vision + d_audio
    return width * len_text if pooling == "flatten" else width


class _DeferredLinear(torch.autograd.Function):
    """y = x W^T + b whose weight gradient is recorded as (grad_out, x) in ``pending``, not computed.

    The weight enters detached, so autograd never sees it; input and bias gradients are the usual ones.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                pending: list[tuple[torch.Tensor, torch.Tensor]], xw: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.pending = pending
        if xw is None:
            return F.linear(x, weight, bias)
        return xw if bias is None else torch.add(xw, bias).to(xw.dtype)  # x W^T primed for the window

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        ctx.pending.append((grad_out, x))  # (B, out), (B, in): summed into weight.grad by flush
        grad_x = grad_out.to(weight.dtype) @ weight if ctx.needs_input_grad[0] else None  # (B, in)
        grad_b = grad_out.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_b, None, None


class DeferredWeightGradLinear(nn.Linear):
    """An ``nn.Linear`` that can defer its weight gradient to one matrix product per accumulation window.

    Off by default (plain ``nn.Linear``). With ``set_deferred(True)``, each backward stores the batch's
    (grad_out, input); ``flush_grad()`` then adds sum_b grad_out_b^T x_b = G^T X to ``weight.grad`` in one
    product. Call ``flush_grad`` before reading, clipping or clearing gradients (``set_deferred(False)``
    flushes too). Inputs (2-D, as here) and the bias get their gradients at backward time as usual.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.deferred = False
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def set_deferred(self, enabled: bool) -> None:
        """Turn deferral on or off; turning it off first flushes what is pending."""
        if not enabled:
            self.flush_grad()
        self.deferred = bool(enabled)

    def prime(self, inputs: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """x W^T for the next batches' inputs (each (B_k, in), no gradient) in one product, split per batch.

        Deferred mode only, for inputs that need no gradient (else None). Pass each batch's rows to its
        forward as ``xw``; the weight must not change until those forwards have run.
        """
        if not (self.deferred and self.weight.requires_grad and inputs) or any(x.requires_grad for x in inputs):
            return None
        with torch.no_grad():
            xw = F.linear(torch.cat(inputs), self.weight)  # (sum B_k, out): the weight read once
        return list(xw.split([x.shape[0] for x in inputs]))

    @property
    def pending(self) -> int:
        """Batches recorded since the last flush."""
        return len(self._pending)

    def flush_grad(self) -> None:
        """Add the recorded batches' weight gradient to ``weight.grad`` (created when None), then forget them."""
        if not self._pending:
            return
        w = self.weight
        grad_out = torch.cat([g for g, _ in self._pending]).to(w.dtype)  # (N, out)
        inputs = torch.cat([x for _, x in self._pending]).to(w.dtype)  # (N, in)
        self._pending.clear()
        if w.grad is None:
            w.grad = grad_out.t() @ inputs  # (out, in)
        else:
            w.grad.addmm_(grad_out.t(), inputs)

    def forward(self, x: torch.Tensor, xw: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in) -> (B, out), the usual affine map; ``xw`` = x W^T from ``prime`` (deferred mode only)."""
        if self.deferred and torch.is_grad_enabled() and self.weight.requires_grad:
            if x.ndim != 2:
                raise ValueError(f"deferred weight gradient: expected a 2-D input (batch, {self.in_features}), "
                                 f"got {tuple(x.shape)}")
            return _DeferredLinear.apply(x, self.weight.detach(), self.bias, self._pending, xw)
        return super().forward(x)


class LearnedRouter(nn.Module):
    """Linear -> L2-normalise rows -> ReLU -> Linear to 3 -> / tau -> softmax (reference ``Router``).

    The hidden width is one eighth of the input width (integer division). ``transfer_v`` and
    ``transfer_a`` (reference ``transfer_v_ali`` / ``transfer_a_ali``) exist only for a flattened router on
    unaligned data (some length differs from L_t): Linear(L_v -> L_t) and Linear(L_a -> L_t) applied to every feature channel.
    """

    tau: torch.Tensor  # the softmax temperature, a buffer (moves with the module, not saved)

    def __init__(self, *, d_text: int, d_vision: int, d_audio: int, len_text: int, len_vision: int,
                 len_audio: int, pooling: Pooling = "flatten", temperature: float = 0.1):
        super().__init__()
        if pooling not in ("flatten", "mean"):
            raise ValueError(f"router_input: must be 'flatten' or 'mean', got {pooling!r}")
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        in_features = router_in_features(pooling, d_text=d_text, d_vision=d_vision, d_audio=d_audio,
                                         len_text=len_text)
        hidden = in_features // 8
        if hidden < 1:
            raise ValueError(f"router: input width {in_features} is below 8, so the hidden width "
                             f"(one eighth) would be 0; use wider features or router_input='flatten'")
        self.pooling, self.len_text = pooling, len_text
        # a buffer, not a float: members stacked by emoe.stack may each have their own (float64, so a float32
        # model divides by the same rounded value as by the Python float before)
        self.register_buffer("tau", torch.tensor(float(temperature), dtype=torch.float64), persistent=False)
        # as in the reference, unaligned data (any length differing from the text's) maps both modalities
        transfer = pooling == "flatten" and not len_vision == len_audio == len_text
        self.transfer_v = nn.Linear(len_vision, len_text) if transfer else None
        self.transfer_a = nn.Linear(len_audio, len_text) if transfer else None
        self.l1 = DeferredWeightGradLinear(in_features, hidden)
        self.l2 = nn.Linear(hidden, 3)

    @property
    def temperature(self) -> float:
        """The softmax temperature tau."""
        return float(self.tau)

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.tau.fill_(float(value))

    def set_deferred_grad(self, enabled: bool) -> None:
        """Defer the first layer's weight gradient to ``flush_grad`` (see ``DeferredWeightGradLinear``)."""
        self.l1.set_deferred(enabled)

    def flush_grad(self) -> None:
        """Add the deferred weight gradient of the first layer to its ``.grad``."""
        self.l1.flush_grad()

    def prime(self, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[RouterPrimed | None]:
        """The first layer's (input, product) for the coming (text, vision, audio) batches of a window.

        Only where the router's input is the raw data (flattened, no learned time map) and deferral is
        on: then it needs no gradient and one product serves the window. Otherwise all None.
        """
        if self.pooling != "flatten" or self.transfer_v is not None or self.transfer_a is not None:
            return [None] * len(batches)
        with torch.no_grad():
            inputs = [self.features(t, v, a) for t, v, a in batches]
        products = self.l1.prime(inputs)
        if products is None:
            return [None] * len(batches)
        return list(zip(inputs, products))

    @staticmethod
    def _to_length(x: torch.Tensor, transfer: nn.Linear | None) -> torch.Tensor:
        # (B, L_m, d_m) -> (B, L_t, d_m): the learned map acts on the time axis of every channel
        return x if transfer is None else transfer(x.transpose(1, 2)).transpose(1, 2)

    def features(self, text: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Router input (B, in_features) from raw text (B, L_t, d_t), vision (B, L_v, d_v), audio (B, L_a, d_a)."""
        if self.pooling == "mean":
            return torch.cat([text.mean(1), vision.mean(1), audio.mean(1)], dim=-1)  # (B, d_t+d_v+d_a)
        vision = self._to_length(vision, self.transfer_v)
        audio = self._to_length(audio, self.transfer_a)
        return torch.cat([text, vision, audio], dim=-1).flatten(1)  # (B, L_t * (d_t+d_v+d_a))

    def forward(self, *, text: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor,
                primed: RouterPrimed | None = None) -> torch.Tensor:
        """Weights (B, 3), rows summing to 1, modality order l, v, a; ``primed`` from ``prime`` for this batch."""
        if primed is None:
            z = self.l1(self.features(text, vision, audio))
        else:
            z = self.l1(primed[0], primed[1])
        h = F.relu(F.normalize(z, p=2.0, dim=1))  # (B, hidden)
        return torch.softmax(self.l2(h) / self.tau, dim=1)


class ConstantRouter(nn.Module):
    """The same weights for every sample: uniform (1/3 each) or fixed (given, l v a); no parameters."""

    weights: torch.Tensor

    def __init__(self, weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)):
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (3,) or bool((w < 0).any()) or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"fixed_weights: need three non-negative weights (l, v, a) summing to 1, "
                             f"got {tuple(weights)}")
        self.register_buffer("weights", w, persistent=False)

    def forward(self, *, text: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor,
                primed: RouterPrimed | None = None) -> torch.Tensor:
        """Weights (B, 3): the constant row repeated for the batch, in the inputs' floating dtype."""
        dtype = vision.dtype if vision.is_floating_point() else self.weights.dtype
        return self.weights.to(dtype).expand(vision.shape[0], 3)
