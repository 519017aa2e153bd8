"""One training batch's forward and loss, run eagerly, under ``torch.compile``, or replayed as CUDA graphs.

``train.compile`` picks the mode: ``off`` (eager, the default), ``default`` (``torch.compile`` of the
step; its backward is compiled too) or ``graphs`` (``torch.compile(mode="reduce-overhead")``: forward and
backward are captured as CUDA graphs and replayed, inputs copied into static buffers). Capture needs a
step without hidden state: dropout masks come in as tensors (one uniform vector per batch, cut inside the
step, see ``emoe.dropout``), the router's primed products are explicit arguments, and nothing syncs with
the host. The router's deferred weight gradient records Python-side state during backward, so compiled
modes use the ordinary autograd gradient instead (same sum). Where ``graphs`` cannot run (no CUDA) the
step runs eagerly after one warning.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from emoe.config import EMOEConfig
from emoe.data.arrays import Batch
from emoe.dropout import PlannedDropout, cut_masks, record_plan
from emoe.evaluate import autocast_context
from emoe.losses import total_loss
from emoe.router import RouterPrimed

__all__ = ["CompileMode", "TrainStep", "effective_mode"]

CompileMode = Literal["off", "default", "graphs"]
_warned: set[str] = set()


def effective_mode(requested: str, device: torch.device) -> CompileMode:
    """The mode that will run: ``graphs`` without CUDA falls back to ``off`` with one warning per process."""
    if requested not in ("off", "default", "graphs"):
        raise ValueError(f"train.compile: must be off, default or graphs, got {requested!r}")
    if requested == "graphs" and device.type != "cuda":
        if "graphs" not in _warned:
            _warned.add("graphs")
            warnings.warn(f"train.compile='graphs' needs a CUDA device; on {device.type} the step runs eagerly "
                          "(compile='off')", RuntimeWarning, stacklevel=2)
        return "off"
    return requested  # type: ignore[return-value]


class TrainStep:
    """Forward + loss of one training batch: ``step(batch, primed)`` -> (total loss, (6,) detached terms).

    ``dropout``: the run's planned dropout (masks from its own generator), or None for the global one.
    """

    def __init__(self, model: nn.Module, cfg: EMOEConfig, device: torch.device,
                 dropout: PlannedDropout | None = None):
        self.model, self.cfg, self.device, self.dropout = model, cfg, device, dropout
        self.mode = effective_mode(getattr(cfg.train, "compile", "off"), device)
        if self.mode == "off":
            self._fn = self._step
        else:
            self._fn = torch.compile(self._step, mode="reduce-overhead" if self.mode == "graphs" else None,
                                     dynamic=False)

    @property
    def eager(self) -> bool:
        """Whether the step runs eagerly (then the router may defer its weight gradient and be primed)."""
        return self.mode == "off"

    def _step(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
              plans: Any, uniforms: list[torch.Tensor | None] | None, keep: torch.Tensor | None,
              primed: RouterPrimed | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dropout is not None and uniforms is not None:
            self.dropout.feed.set(cut_masks(plans, uniforms, keep=keep))
        with autocast_context(self.cfg, self.device):
            out = self.model(text=text, audio=audio, vision=vision, router_primed=primed)
            terms = total_loss(out, labels, self.cfg.loss, self.cfg.model.fusion)
        vals = torch.stack([terms.total, terms.task, terms.uni, terms.sim, terms.ent, terms.ud]).detach().float()
        return terms.total, vals

    def __call__(self, batch: Batch, primed: RouterPrimed | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        plans = uniforms = keep = None
        if self.dropout is not None:
            def record() -> list[Any]:
                with autocast_context(self.cfg, self.device):
                    return [record_plan(self.model, lambda: self.model(
                        text=batch.text, audio=batch.audio, vision=batch.vision))]

            key = (tuple(batch.text.shape), self.model.training)
            plans = self.dropout.plans(key, record)
            uniforms = self.dropout.uniforms(plans)
            if self.eager and uniforms[0] is not None:  # compiled modes fuse the per-site cut themselves
                keep = self.dropout.keep_rates(key, uniforms[0].dtype)
        if self.mode == "graphs":
            torch.compiler.cudagraph_mark_step_begin()
        return self._fn(batch.text, batch.audio, batch.vision, batch.labels, plans, uniforms, keep, primed)
