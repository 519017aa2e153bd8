"""Modality experts of EMOE: a pre-norm causal Transformer encoder with the reference's quirks.

The parameter layout follows the reference (MulT/fairseq style): ``self_attn.in_proj_weight`` (3d, d),
``self_attn.in_proj_bias``, ``self_attn.out_proj``, ``fc1``, ``fc2``, ``layer_norms.0/1`` per layer and a
final ``layer_norm``, so reference checkpoints map one to one. Attention runs through
``scaled_dot_product_attention`` (fast path) or explicit matrix products (plain path, the reference's
arithmetic); both give the same outputs and a test holds them to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emoe.dropout import NATIVE

__all__ = [
    "CausalSelfAttention",
    "EncoderLayer",
    "TransformerEncoder",
    "position_embedding",
    "sinusoidal_table",
]


def sinusoidal_table(n_positions: int, dim: int, *, device: torch.device | None = None) -> torch.Tensor:
    """(n_positions + 1, dim) sinusoidal table; row 0 is the zero padding row, row p is position p.

    First half of the channels sin, second half cos, frequency exp(-i * ln(10000) / (dim/2 - 1)),
    computed in float32 in the reference's order of operations so values match bit for bit.
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"dim: sinusoidal positions need an even width of at least 4, got {dim}")
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(n_positions + 1, dtype=torch.float32, device=device).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (n_positions + 1, dim)
    table[0] = 0.0
    return table


def position_embedding(x: torch.Tensor) -> torch.Tensor:
    """Position embeddings for x (B, L, d): position t+1 at step t, or the zero row where x[..., 0] == 0.

    This is the reference quirk: positions come from fairseq's padding logic applied to the first
    feature channel, so a step whose first channel is exactly 0 is treated as padding.
    """
    _, length, dim = x.shape
    table = sinusoidal_table(length, dim, device=x.device)[1:].to(x.dtype)  # (L, d), positions 1..L
    not_pad = (x[..., 0] != 0).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return table.unsqueeze(0) * not_pad  # (B, L, d)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a future mask, laid out like ``torch.nn.MultiheadAttention``."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"n_heads: {n_heads} does not divide the width {dim}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.dropout = dropout
        self.drop = NATIVE  # where dropout masks come from (emoe.dropout)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: Xavier-uniform projections, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, length, _ = t.shape  # (B, L, d) -> (B, H, L, d/H)
        return t.view(b, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, *, fast: bool = True, last_only: bool = False) -> torch.Tensor:
        """x (B, L, d) -> (B, L, d), or (B, 1, d) for the last query only when ``last_only``.

        Position t attends to positions <= t. The last query may see every key, so ``last_only``
        needs no mask and gives exactly the last row of the full output.
        """
        b, length, d = x.shape
        w, bias = self.in_proj_weight, self.in_proj_bias
        if last_only:
            q = F.linear(x[:, -1:], w[:d], bias[:d])  # (B, 1, d)
            k, v = F.linear(x, w[d:], bias[d:]).chunk(2, dim=-1)  # (B, L, d) each
        else:
            q, k, v = F.linear(x, w, bias).chunk(3, dim=-1)  # (B, L, d) each
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, Lq|L, d/H)
        p = self.dropout if self.training else 0.0
        causal = not last_only and length > 1
        if fast and self.drop.sdpa(p):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        else:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, H, Lq, L)
            if causal:
                future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            # softmax in at least float32, as the reference does for half precision
            attn = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
            attn = self.drop(attn.to(scores.dtype), self.dropout, self.training)
            out = attn @ v  # (B, H, Lq, d/H)
        out = out.transpose(1, 2).reshape(b, q.shape[2], d)  # (B, Lq, d)
        return self.out_proj(out)


def _xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class EncoderLayer(nn.Module):
    """Pre-norm layer: x + Drop(MHA(LN(x))), then x + Drop(FC2(Drop(ReLU(FC1(LN(x)))))), FC1 d -> 4d."""

    def __init__(self, dim: int, n_heads: int, *, attn_dropout: float, relu_dropout: float,
                 res_dropout: float):
        super().__init__()
        self.self_attn = CausalSelfAttention(dim, n_heads, attn_dropout)
        self.fc1 = _xavier_linear(dim, 4 * dim)
        self.fc2 = _xavier_linear(4 * dim, dim)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout
        self.drop = NATIVE

    def forward(self, x: torch.Tensor, *, fast: bool = True, last_only: bool = False) -> torch.Tensor:
        """x (B, L, d) -> (B, L, d); with ``last_only`` -> (B, 1, d), the output at the last step."""
        residual = x[:, -1:] if last_only else x
        h = self.self_attn(self.layer_norms[0](x), fast=fast, last_only=last_only)
        x = residual + self.drop(h, self.res_dropout, self.training)
        h = self.drop(F.relu(self.fc1(self.layer_norms[1](x))), self.relu_dropout, self.training)
        return x + self.drop(self.fc2(h), self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """One modality expert: scale by sqrt(d), add positions, dropout, n causal layers, final LayerNorm."""

    def __init__(self, dim: int, n_heads: int, n_levels: int, *, attn_dropout: float = 0.0,
                 relu_dropout: float = 0.0, res_dropout: float = 0.0, embed_dropout: float = 0.0):
        super().__init__()
        if n_levels < 1:
            raise ValueError(f"n_levels: need at least one layer, got {n_levels}")
        self.dim = dim
        self.embed_scale = math.sqrt(dim)
        self.embed_dropout = embed_dropout
        self.drop = NATIVE
        self.layers = nn.ModuleList([
            EncoderLayer(dim, n_heads, attn_dropout=attn_dropout, relu_dropout=relu_dropout,
                         res_dropout=res_dropout)
            for _ in range(n_levels)
        ])
        self.layer_norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed_scale * x + position_embedding(x)  # (B, L, d)
        return self.drop(h, self.embed_dropout, self.training)

    def sequence(self, x: torch.Tensor, *, fast: bool = True) -> torch.Tensor:
        """Every step's output: x (B, L, d) -> (B, L, d), after the final LayerNorm."""
        h = self._embed(x)
        for layer in self.layers:
            h = layer(h, fast=fast)
        return self.layer_norm(h)

    def forward(self, x: torch.Tensor, *, fast: bool = True) -> torch.Tensor:
        """The expert representation, the output at the last step: x (B, L, d) -> (B, d).

        The fast path computes the last layer for the last query only (the only row that is used);
        the plain path computes the whole sequence as the reference does and takes its last row.
        """
        if not fast:
            return self.sequence(x, fast=False)[:, -1]
        h = self._embed(x)
        for layer in self.layers[:-1]:
            h = layer(h, fast=True)
        h = self.layers[-1](h, fast=True, last_only=True)  # (B, 1, d)
        return self.layer_norm(h[:, 0])
