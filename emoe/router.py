"""The Mixture-of-Modality-Experts router: per-sample modality weights w = (w_l, w_v, w_a).

A learned router looks at the raw inputs (before projection or dropout), either flattened at text length
(the faithful reference; unaligned vision/audio first mapped to that length by a learned Linear over the
time axis) or mean-pooled over time (a much cheaper study option). Constant routers give uniform or fixed
weights for ablations.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConstantRouter", "LearnedRouter", "router_in_features"]

Pooling = Literal["flatten", "mean"]


def router_in_features(pooling: Pooling, *, d_text: int, d_vision: int, d_audio: int, len_text: int) -> int:
    """Width of the router's input: L_t * (d_t + d_v + d_a) flattened, or d_t + d_v + d_a mean-pooled."""
    width = d_text + d_vision + d_audio
    return width * len_text if pooling == "flatten" else width


class LearnedRouter(nn.Module):
    """Linear -> L2-normalise rows -> ReLU -> Linear to 3 -> / tau -> softmax (reference ``Router``).

    The hidden width is one eighth of the input width (integer division). ``transfer_v`` and
    ``transfer_a`` (reference ``transfer_v_ali`` / ``transfer_a_ali``) exist only for a flattened router on
    unaligned data (some length differs from L_t): Linear(L_v -> L_t) and Linear(L_a -> L_t) applied to every feature channel.
    """

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
        self.pooling, self.temperature, self.len_text = pooling, float(temperature), len_text
        # as in the reference, unaligned data (any length differing from the text's) maps both modalities
        transfer = pooling == "flatten" and not len_vision == len_audio == len_text
        self.transfer_v = nn.Linear(len_vision, len_text) if transfer else None
        self.transfer_a = nn.Linear(len_audio, len_text) if transfer else None
        self.l1 = nn.Linear(in_features, hidden)
        self.l2 = nn.Linear(hidden, 3)

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

    def forward(self, text: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Weights (B, 3), rows summing to 1, modality order l, v, a."""
        h = F.relu(F.normalize(self.l1(self.features(text, vision, audio)), p=2.0, dim=1))  # (B, hidden)
        return torch.softmax(self.l2(h) / self.temperature, dim=1)


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

    def forward(self, text: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Weights (B, 3): the constant row repeated for the batch, in the inputs' floating dtype."""
        dtype = vision.dtype if vision.is_floating_point() else self.weights.dtype
        return self.weights.to(dtype).expand(vision.shape[0], 3)
