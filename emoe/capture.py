"""One training batch's forward and loss, run eagerly, under ``torch.compile``, or replayed as CUDA graphs.

``train.compile`` picks the mode: ``off`` (eager, the default), ``default`` (``torch.compile`` of the
step; its backward is compiled too) or ``graphs``: the forward + loss of a whole accumulation window
(``TrainStep.window``; of one batch where windows cannot run as one forward) and its backward are
captured once per input shape as two CUDA graphs (``torch.cuda.make_graphed_callables``) and replayed,
the rows and their dropout masks (or uniforms) copied into the graphs' static inputs. Capture needs a
step without hidden state: dropout masks come in as tensors (one uniform vector per batch, cut inside
the step, see ``emoe.dropout``), the router's primed products are explicit arguments, and nothing syncs
with the host. The router's deferred weight gradient records Python-side state during backward, so
compiled modes use the ordinary autograd gradient instead (same sum). Where ``graphs`` cannot run (no
CUDA, or a capture that fails) the step runs eagerly after one warning.

Replayed graphs write their outputs and parameter gradients into the same static memory every time, so
each parameter the graph trains holds a gradient tensor of its own before a replay: autograd then adds
the graph's gradient into it in place, as it does for an eager batch, instead of adopting (and, at the
next replay, losing) the graph's buffer.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from emoe.config import EMOEConfig
from emoe.data.batches import Batch
from emoe.dropout import DropoutSite, PlannedDropout, cut_masks, record_plan, window_masks
from emoe.dynamo_free import allow_dynamo
from emoe.evaluate import autocast_context
from emoe.losses import total_loss
from emoe.outputs import ModelOutput
from emoe.router import RouterPrimed

__all__ = ["CPU_FORWARD_BYTES", "CompileMode", "TrainStep", "batches_per_forward", "capture", "capture_failed",
           "effective_mode", "own_gradients",
           "refill"]

CompileMode = Literal["off", "default", "graphs"]
_warned: set[str] = set()
#: On CPU a window goes through one forward only while its largest activation stays under this. There the
#: arithmetic, not the launches, soon dominates, and big tensors cost cache misses and fresh page faults
#: (glibc maps those above its mmap threshold anew each time). Measured on 2 cores, one thread (one
#: forward per window against batch by batch): the main job's model (0.6 MB per window) 2.7x faster,
#: bench/model_step.py's small configuration (8 MB) 0-20% slower, the faithful one (33 MB) 17% slower, and
#: slower still cut into parts (each part computes the 196M-weight router gradient that the batch-by-batch
#: path defers to one product per window).
CPU_FORWARD_BYTES = 4 * 2**20


def batches_per_forward(cfg: EMOEConfig, device: torch.device, members: int = 1) -> int:
    """How many batches go through one training forward (``train.window_forward``): the whole accumulation
    window on an accelerator, and on CPU when the window's largest activation (the feed-forward layer's,
    the attention scores' or the flattened router input, for ``members`` stacked runs) stays under
    ``CPU_FORWARD_BYTES``; otherwise (or without ``window_forward``) one."""
    t, m = cfg.train, cfg.model
    if not getattr(t, "window_forward", False):
        return 1
    if device.type != "cpu":
        return t.update_epochs
    length = max(m.len_text, m.len_audio, m.len_vision)
    floats = max(length * 4 * m.d_model, m.n_heads * length * length)
    if m.router == "learned" and m.router_input == "flatten":
        floats = max(floats, m.len_text * m.d_text + m.len_audio * m.d_audio + m.len_vision * m.d_vision)
    window = 4 * floats * t.batch_size * t.update_epochs * max(1, members)
    return t.update_epochs if window <= CPU_FORWARD_BYTES else 1


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
        self._graphs: dict[Any, tuple[nn.Module, list[torch.Tensor]]] = {}
        if self.mode == "off":
            self._fn: Any = self._step
        elif self.mode == "graphs":
            self._fn = self._graphed
        else:
            allow_dynamo()  # a process that ran eager trials first compiles with torch's own wrappers
            self._fn = torch.compile(self._step, dynamic=False)

    def release(self) -> None:
        """Drop the captured graphs, and with them their memory (the run is over; the graphs and this step
        refer to each other, so without this only a later garbage collection would free them)."""
        self._graphs.clear()

    @property
    def eager(self) -> bool:
        """Whether the step runs eagerly (then the router may defer its weight gradient and be primed)."""
        return self.mode == "off"

    @property
    def windowed(self) -> bool:
        """Whether ``window`` runs an accumulation window as one forward: ``batches_per_forward`` says so,
        the step is eager or replayed (graphs capture the window's forward), the run has its own dropout
        masks (each batch keeps its draw) and no text encoder (whose dropout draws from the global
        generator)."""
        return (self.mode in ("off", "graphs") and self.dropout is not None
                and batches_per_forward(self.cfg, self.device) > 1
                and getattr(self.model, "text_encoder", None) is None)

    def _step(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
              plans: Any, uniforms: list[torch.Tensor | None] | None, keep: torch.Tensor | None,
              primed: RouterPrimed | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dropout is not None and uniforms is not None:
            self.dropout.feed.set(cut_masks(plans, uniforms, keep=keep))
        with autocast_context(self.cfg, self.device):
            out = self.model(text=text, audio=audio, vision=vision, router_primed=primed)
            terms = total_loss(out, labels, self.cfg.loss, self.cfg.model.fusion)
        return terms.total, terms.stacked()

    def _plans(self, batch: Batch) -> tuple[Any, list[list[DropoutSite]]]:
        """The run's dropout plans for batches shaped like ``batch`` (recorded on it the first time)."""
        def record() -> list[Any]:
            with autocast_context(self.cfg, self.device):
                return [record_plan(self.model, lambda: self.model(
                    text=batch.text, audio=batch.audio, vision=batch.vision))]

        key = (tuple(batch.text.shape), self.model.training)
        return key, self.dropout.plans(key, record)  # type: ignore[union-attr]

    def __call__(self, batch: Batch, primed: RouterPrimed | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        plans = uniforms = keep = None
        if self.dropout is not None:
            key, plans = self._plans(batch)
            uniforms = self.dropout.uniforms(plans)
            if self.eager and uniforms[0] is not None:  # compiled modes fuse the per-site cut themselves
                keep = self.dropout.keep_rates(key, uniforms[0].dtype)
        return self._fn(batch.text, batch.audio, batch.vision, batch.labels, plans, uniforms, keep, primed)

    # --- graphs: one captured forward and backward per input shape -----------------------------------
    def _graphed(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
                 plans: Any, uniforms: list[torch.Tensor | None] | None, keep: torch.Tensor | None,
                 primed: RouterPrimed | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch replayed (``_step`` with the batch and its drawn uniforms as the graphs' inputs)."""
        def body(text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
                 *drawn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._step(text, audio, vision, labels, plans, refill(uniforms, drawn), None, None)

        return self._replay("batch", body, (text, audio, vision, labels), uniforms,
                            lambda: self._step(text, audio, vision, labels, plans, uniforms, keep, primed))

    def _replay(self, kind: str, body: Any, args: tuple[torch.Tensor, ...],
                extra: list[torch.Tensor | None] | None, eager: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``body(*args, *extra)`` replayed from the graphs captured for inputs of these shapes (captured at
        the first such call; ``extra``'s None entries are not inputs); ``eager()`` where capture fails."""
        tensors = (*args, *[t for t in extra or [] if t is not None])
        key = (kind, tuple((t.shape, t.dtype) for t in tensors), None if extra is None else
               tuple(t is None for t in extra), self.model.training)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(body, tensors)
            except Exception as exc:  # an op that cannot be captured: eager from here on, said once
                capture_failed(exc, "the training step", stacklevel=4)
                self.mode, self._fn, self._graphs = "off", self._step, {}
                return eager()
        graphed, trained = self._graphs[key]
        own_gradients(trained)
        return graphed(*tensors)

    def _capture(self, body: Any, sample: tuple[torch.Tensor, ...]) -> tuple[Any, list[torch.Tensor]]:
        """``body`` captured for inputs like ``sample``, and the parameters it gives gradients to."""
        module = _GraphBody(self.model, body)
        module.train(self.model.training)
        return capture(module, tuple(t.detach().clone() for t in sample),
                       [p for p in self.model.parameters() if p.requires_grad])

    # --- an accumulation window in one forward ---------------------------------------------------------
    def _terms(self, pred: torch.Tensor, uni_pred: torch.Tensor, weights: torch.Tensor, p_uni: torch.Tensor,
               p_fused: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = ModelOutput(pred=pred, uni_pred=uni_pred, weights=weights, h=p_uni, p_uni=p_uni, p_fused=p_fused)
        terms = total_loss(out, labels, self.cfg.loss, self.cfg.model.fusion)
        return terms.total, terms.stacked()

    def _window_masks(self, batch: Batch, size: int) -> list[torch.Tensor | None] | None:
        """The masks of the window's rows (``emoe.dropout.window_masks``: each batch's own draw, in batch
        order, as ``__call__`` draws them), or None where the sites do not join along the batch axis."""
        return window_masks(self.dropout, lambda rows: self._plans(_rows(batch, 0, rows)),  # type: ignore[arg-type]
                            batch.labels.shape[0], size)

    def window(self, batch: Batch, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward + loss of batches of an accumulation window (``windowed`` steps): ``batch`` holds the
        batches one after another, ``size`` rows each (the last may be shorter). Returns the sum of the
        batches' totals, whose gradient is the window's accumulated one, and their (W, 6) terms: each batch
        keeps its own loss and its own dropout draw, as W calls give, in one forward and one backward (the
        model is per-sample). Where the dropout sites do not stack along the batch axis, one forward per
        batch, summed.
        """
        n = batch.labels.shape[0]
        masks = self._window_masks(batch, size)
        if masks is None:
            parts = [self(_rows(batch, start, size)) for start in range(0, n, size)]
            return torch.stack([t for t, _ in parts]).sum(), torch.stack([v for _, v in parts])
        args = (batch.text, batch.audio, batch.vision, batch.labels)
        if self.mode == "graphs":
            def body(text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
                     *given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return self._window_forward(text, audio, vision, labels, refill(masks, given) or [], size)

            return self._replay("window", body, args, masks, lambda: self._window_forward(*args, masks, size))
        return self._window_forward(*args, masks, size)

    def _window_forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor,
                        labels: torch.Tensor, masks: list[torch.Tensor | None], size: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``window``'s one forward over rows with their ``masks`` (what ``graphs`` captures)."""
        n = labels.shape[0]
        q, rest = divmod(n, size)
        self.dropout.feed.set(masks)  # type: ignore[union-attr]
        with autocast_context(self.cfg, self.device):
            out = self.model(text=text, audio=audio, vision=vision)
            outs = (out.pred, out.uni_pred, out.weights, out.p_uni, out.p_fused, labels)
            totals, vals = [], []
            if q:
                total, val = torch.func.vmap(self._terms)(*(t[:q * size].unflatten(0, (q, size)) for t in outs))
                totals.append(total.sum())
                vals.append(val)
            if rest:
                total, val = self._terms(*(t[q * size:] for t in outs))
                totals.append(total)
                vals.append(val.unsqueeze(0))
        return (totals[0] if len(totals) == 1 else totals[0] + totals[1]), torch.cat(vals)


def capture(body: Any, sample: tuple[torch.Tensor, ...], params: list[torch.Tensor]
            ) -> tuple[Any, list[torch.Tensor]]:
    """``body`` (a module or a function of tensors returning (total, terms)) captured as CUDA graphs for inputs
    like ``sample`` (``torch.cuda.make_graphed_callables``), and those of ``params`` it gives gradients to:
    found by one eager forward and backward first, so that parameters the step leaves alone keep no
    gradient (and no optimiser update), as in an eager step."""
    total, _ = body(*sample)
    grads = torch.autograd.grad(total, params, allow_unused=True)
    trained = [p for p, g in zip(params, grads) if g is not None]
    del total, grads
    return torch.cuda.make_graphed_callables(body, sample, allow_unused_input=True), trained


def own_gradients(params: list[torch.Tensor]) -> None:
    """Give each parameter without one a zero gradient of its own before a replay (see the module docstring:
    autograd would otherwise adopt the graph's static gradient buffer, which the next replay overwrites)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def capture_failed(exc: Exception, what: str, stacklevel: int) -> None:
    """The one warning of a capture that failed (the step then runs eagerly)."""
    warnings.warn(f"train.compile='graphs': capturing {what} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                  "it runs eagerly (compile='off')", RuntimeWarning, stacklevel=stacklevel + 1)


class _GraphBody(nn.Module):
    """A step of tensors only, for ``make_graphed_callables``: ``run(*tensors)`` -> (total, terms), the
    model's parameters as the module's own."""

    def __init__(self, model: nn.Module, run: Any):
        super().__init__()
        self.model, self.run = model, run

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run(*tensors)


def refill(like: list[torch.Tensor | None] | None,
            given: tuple[torch.Tensor, ...]) -> list[torch.Tensor | None] | None:
    """``like`` with its tensors replaced, in order, by ``given`` (its None entries stay None)."""
    if like is None:
        return None
    rest = iter(given)
    return [None if t is None else next(rest) for t in like]


def _rows(batch: Batch, start: int, size: int) -> Batch:
    """Rows ``start:start + size`` of ``batch`` (views)."""
    end = start + size
    return Batch(text=batch.text[start:end], audio=batch.audio[start:end], vision=batch.vision[start:end],
                 labels=batch.labels[start:end], index=batch.index[start:end])
