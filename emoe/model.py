"""EMOE: three modality experts, a per-sample router, unimodal heads and a weighted fusion head.

``EMOE(cfg)`` builds the model from a ``ModelConfig``; ``EMOE.forward(*, text, audio, vision)`` takes the
modalities by name (audio and vision have the same rank, so a positional swap would be silent) and returns
an ``emoe.outputs.ModelOutput``. Modality order l, v, a everywhere inside. Pure: no I/O here (a BERT text
encoder, when configured, is loaded by ``emoe.bert``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emoe.config import MODALITIES, ModelConfig
from emoe.dropout import NATIVE, set_dropout_source
from emoe.encoders import TransformerEncoder
from emoe.outputs import ModelOutput
from emoe.router import ConstantRouter, LearnedRouter, RouterPrimed

__all__ = ["EMOE", "ResidualHead", "build_router", "fuse"]


class ResidualHead(nn.Module):
    """p = h + FC2(Dropout(ReLU(FC1(h)))), y = Out(p): the reference's proj1 / proj2 / out_layer."""

    def __init__(self, dim: int, n_outputs: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, n_outputs)
        self.dropout = dropout
        self.drop = NATIVE  # where dropout masks come from (emoe.dropout)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, D) -> (p (B, D), y (B, n_outputs))."""
        p = h + self.fc2(self.drop(F.relu(self.fc1(h)), self.dropout, self.training))
        return p, self.out(p)


def fuse(h: torch.Tensor, weights: torch.Tensor, fusion: str) -> torch.Tensor:
    """Weighted fusion of stacked representations h (B, 3, D) with weights (B, 3).

    sum: sum_m w_m h_m -> (B, D); concat: 3 * [w_l h_l ; w_v h_v ; w_a h_a] -> (B, 3D). The same formula
    builds the distillation target from the unimodal head representations (without the factor 3).
    """
    weighted = weights.unsqueeze(-1) * h  # (B, 3, D)
    if fusion == "sum":
        return weighted.sum(1)
    if fusion == "concat":
        return 3 * weighted.flatten(1)
    raise ValueError(f"fusion: must be 'sum' or 'concat', got {fusion!r}")


def build_router(cfg: ModelConfig, *, d_text: int) -> nn.Module:
    """The router a configuration asks for: learned (flatten | mean), uniform, or fixed weights."""
    if cfg.router == "uniform":
        return ConstantRouter((1 / 3, 1 / 3, 1 / 3))
    if cfg.router == "fixed":
        return ConstantRouter(tuple(cfg.fixed_weights))  # type: ignore[arg-type]
    return LearnedRouter(d_text=d_text, d_vision=cfg.d_vision, d_audio=cfg.d_audio, len_text=cfg.len_text,
                         len_vision=cfg.len_vision, len_audio=cfg.len_audio, pooling=cfg.router_input,
                         temperature=cfg.temperature)


class EMOE(nn.Module):
    """Mixture of Modality Experts with unimodal heads (Fang et al., CVPR 2025), built from a ``ModelConfig``.

    Submodules: ``text_encoder`` (optional BERT), ``router``, ``proj`` (per-modality Conv1d d_m -> d, absent
    when d_m == d), ``shared_conv`` (the 1x1 conv shared by all modalities), ``experts`` and ``heads``
    (keyed l, v, a) and ``fused_head``. ``fast_path`` selects fused attention (same outputs). With
    ``text_input='bert'`` the encoder is loaded from ``cfg.bert_path`` (local files only) unless one is
    passed; its hidden size replaces ``d_text``.
    """

    def __init__(self, cfg: ModelConfig, *, text_encoder: nn.Module | None = None, fast_path: bool = True):
        super().__init__()
        d_text = cfg.d_text
        if cfg.text_input == "bert":
            if text_encoder is None:
                from emoe.bert import load_bert

                text_encoder = load_bert(str(cfg.bert_path))
            d_text = int(getattr(text_encoder, "hidden_size", d_text))
        elif text_encoder is not None:
            raise ValueError("text_encoder: given, but text_input is 'features' (set text_input='bert')")
        d_model = cfg.d_model
        self.cfg = cfg
        self.dims = {"l": d_text, "v": cfg.d_vision, "a": cfg.d_audio}
        self.lengths = {"l": cfg.len_text, "v": cfg.len_vision, "a": cfg.len_audio}
        self.d_model, self.fusion, self.n_outputs = d_model, cfg.fusion, cfg.n_outputs
        self.text_dropout, self.fast_path = cfg.text_dropout, fast_path
        self.drop = NATIVE
        self.text_encoder = text_encoder
        self.router = build_router(cfg, d_text=d_text)
        kernels = {"l": cfg.kernel_l, "v": cfg.kernel_v, "a": cfg.kernel_a}
        self.proj = nn.ModuleDict({
            m: nn.Conv1d(self.dims[m], d_model, kernel_size=kernels[m], padding=0, bias=False)
            for m in MODALITIES if self.dims[m] != d_model
        })
        self.shared_conv = nn.Conv1d(d_model, d_model, kernel_size=1, padding=0, bias=False)
        attn_dropout = {"l": cfg.attn_dropout_l, "v": cfg.attn_dropout_v, "a": cfg.attn_dropout_a}
        self.experts = nn.ModuleDict({
            m: TransformerEncoder(d_model, cfg.n_heads, cfg.n_levels, attn_dropout=attn_dropout[m],
                                  relu_dropout=cfg.relu_dropout, res_dropout=cfg.res_dropout,
                                  embed_dropout=cfg.embed_dropout)
            for m in MODALITIES
        })
        self.heads = nn.ModuleDict({m: ResidualHead(d_model, cfg.n_outputs, cfg.out_dropout) for m in MODALITIES})
        self.fused_head = ResidualHead(cfg.fused_dim, cfg.n_outputs, cfg.out_dropout)

    def set_fast_path(self, enabled: bool) -> EMOE:
        """Use fused scaled-dot-product attention (True) or the plain reference arithmetic (False)."""
        self.fast_path = bool(enabled)
        return self

    def set_dropout_source(self, source: object) -> EMOE:
        """Draw every dropout mask from ``source`` (see ``emoe.dropout``; default: the global generator)."""
        set_dropout_source(self, source)
        return self

    def set_deferred_grads(self, enabled: bool) -> EMOE:
        """Defer the learned router's first-layer weight gradient to ``flush_grads`` (one product per window).

        For gradient accumulation: with deferral on, call ``flush_grads()`` before reading, clipping,
        stepping on or clearing gradients. Turning it off flushes. No effect for constant routers.
        """
        if isinstance(self.router, LearnedRouter):
            self.router.set_deferred_grad(enabled)
        return self

    def flush_grads(self) -> None:
        """Add every deferred weight gradient to its parameter's ``.grad`` (no-op when nothing is pending)."""
        if isinstance(self.router, LearnedRouter):
            self.router.flush_grad()

    def prime_router(self, batches: list[dict[str, torch.Tensor]]) -> list[RouterPrimed | None]:
        """With deferred gradients on: the learned router's first-layer products for the coming batches
        (each a dict with ``text``, ``audio``, ``vision``) of an accumulation window, in one product.

        Pass ``router_primed=result[i]`` to batch i's forward (explicit: no hidden queue, so the same
        step can be captured). The weights must not change until ``flush_grads``. Same outputs as without
        it. All None with a text encoder (the router then sees encoder outputs that need gradients), a
        constant router, or where priming does not apply (see ``LearnedRouter.prime``).
        """
        if isinstance(self.router, LearnedRouter) and self.text_encoder is None:
            return self.router.prime([(b["text"], b["vision"], b["audio"]) for b in batches])
        return [None] * len(batches)

    def _check(self, name: str, x: torch.Tensor, length: int, dim: int) -> None:
        if x.ndim != 3 or x.shape[1] != length or x.shape[2] != dim:
            raise ValueError(f"{name}: expected shape (batch, {length}, {dim}), got {tuple(x.shape)}")

    def _expert(self, m: str, x: torch.Tensor) -> torch.Tensor:
        # x (B, L_m, d_m) -> conv over time (B, d, L_m - k_m + 1) -> shared 1x1 conv -> expert -> (B, d)
        c = x.transpose(1, 2)  # (B, d_m, L_m)
        if m in self.proj:
            c = self.proj[m](c)
        c = self.shared_conv(c).transpose(1, 2)  # (B, L', d)
        return self.experts[m](c, fast=self.fast_path)

    def forward(self, *, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor,
                router_primed: RouterPrimed | None = None) -> ModelOutput:
        """text (B, L_t, d_t) features or (B, 3, L_t) BERT tokens, audio (B, L_a, d_a), vision (B, L_v, d_v).

        ``router_primed``: this batch's entry of ``prime_router`` (deferred-gradient training only).
        """
        if self.text_encoder is not None:
            if text.ndim != 3 or text.shape[1] != 3 or text.shape[2] != self.lengths["l"]:
                raise ValueError(f"text: expected BERT tokens (batch, 3, {self.lengths['l']}), "
                                 f"got {tuple(text.shape)}")
            text = self.text_encoder(text)  # (B, L_t, H)
        self._check("text", text, self.lengths["l"], self.dims["l"])
        self._check("audio", audio, self.lengths["a"], self.dims["a"])
        self._check("vision", vision, self.lengths["v"], self.dims["v"])
        if not text.shape[0] == audio.shape[0] == vision.shape[0]:
            raise ValueError(f"batch sizes differ: text {text.shape[0]}, audio {audio.shape[0]}, "
                             f"vision {vision.shape[0]}")
        # (B, 3): raw inputs, before projection or dropout
        weights = self.router(text=text, vision=vision, audio=audio, primed=router_primed)
        inputs = {"l": self.drop(text, self.text_dropout, self.training), "v": vision, "a": audio}
        h = torch.stack([self._expert(m, inputs[m]) for m in MODALITIES], dim=1)  # (B, 3, d)
        p_list, y_list = zip(*(self.heads[m](h[:, i]) for i, m in enumerate(MODALITIES)))
        p_uni = torch.stack(p_list, dim=1)  # (B, 3, d)
        uni_pred = torch.stack(y_list, dim=1)  # (B, 3, n_out)
        p_fused, pred = self.fused_head(fuse(h, weights.to(h.dtype), self.fusion))  # (B, D), (B, n_out)
        return ModelOutput(pred=pred, uni_pred=uni_pred, weights=weights, h=h, p_uni=p_uni,
                           p_fused=p_fused)
