"""Stacked seeds: K runs of the same shapes trained as one batched model, each exactly as it would run alone.

The K members' parameters are stacked along a leading member dimension (``torch.func.stack_module_state``)
and one ``torch.func.vmap`` of ``functional_call`` runs every member's forward and loss per accumulation
window (``train.window_forward``; else per batch), so the kernels of K small models become K-times-larger
kernels. Members may differ in their seed and in scalars that leave the shapes alone: dropout rates,
router temperature and fixed weights, loss weights, learning rate, weight decay, gradient clipping, the
plateau schedule, early stopping and the epoch budget (``STACKABLE``). With ``train.compile: graphs``
(CUDA) each window's vmapped forward and backward is captured once per shape and replayed
(``emoe.capture``). Each member keeps what makes its trajectory its own: its initial weights (built under
its seed like ``train_emoe``), its data-order generator, its dropout generator (``emoe.dropout``: masks
are drawn per member and passed into the vmapped step), its Adam state and learning rate, its plateau
scheduler, selection, early stopping and divergence. A member that stops (patience, budget, divergence or
its callback) leaves the stack; the others go on. Results, epoch records and checkpoints are per member,
in ``emoe.train.fit``'s format (a member's checkpoint resumes alone with ``fit`` and vice versa).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from emoe.capture import batches_per_forward, capture, capture_failed, effective_mode, own_gradients, refill
from emoe.checkpoint import (
    STATE_VERSION,
    Key,
    record_from_state,
    record_to_state,
    router_from_state,
    router_to_state,
)
from emoe.config import LOSS_WEIGHTS, MODALITIES, ConfigError, EMOEConfig, to_dict
from emoe.data.arrays import DataSet, Split
from emoe.data.batches import iter_batches, resident_arrays
from emoe.dropout import DropoutSite, PlannedDropout, record_plan, window_masks
from emoe.evaluate import NonFiniteOutput, autocast_context, bf16_active, summarize
from emoe.losses import EPOCH_LOSSES, total_loss
from emoe.model import EMOE
from emoe.outputs import EpochRecord, FitResult, ModelOutput
from emoe.stack_optim import StackedAdam
from emoe.stack_rules import STACKABLE, check_stackable
from emoe.train import (
    _check_resume,
    _nonfinite_name,
    _Selection,
    check_data_fits,
    dropout_generator,
    resolve_device,
    restore_dropout_generator,
    seed_everything,
)

__all__ = ["STACKABLE", "OnMemberEpoch", "check_stackable", "fit_stacked"]

#: ``on_epoch(member, record, checkpoint)``: as ``emoe.train.OnEpoch`` for member ``member`` (its index
#: in the list given to ``fit_stacked``); returning True stops that member.
OnMemberEpoch = Callable[[int, EpochRecord, Callable[[], dict[str, Any]]], bool | None]


class _Member:
    """One member's own state: generators, scheduler, selection, history, stop reason."""

    def __init__(self, index: int, cfg: EMOEConfig, device: torch.device, n_params: int):
        self.index, self.cfg = index, cfg
        t = cfg.train
        self.data_gen = torch.Generator().manual_seed(t.seed)
        self.drop_gen = dropout_generator(t.seed, device)
        self.lr_holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=t.lr)  # the scheduler's view
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.lr_holder, mode="min", factor=t.plateau_factor, patience=t.plateau_patience)
        self.sel = _Selection()
        self.history: list[EpochRecord] = []
        self.epoch = 0
        self.status: str = "completed"
        self.error: str | None = None
        self.stopped_by_callback = False

    @property
    def lr(self) -> float:
        return float(self.lr_holder.param_groups[0]["lr"])

    def more_epochs(self) -> bool:
        t = self.cfg.train
        return self.epoch < t.max_epochs and self.epoch - self.sel.epoch < t.early_stop


class _Stack:
    """The stacked parameters, their functional model and optimiser, and the members still in the stack."""

    def __init__(self, cfgs: list[EMOEConfig], device: torch.device):
        models = []
        for cfg in cfgs:  # each member's initial weights exactly as train_emoe builds them
            seed_everything(cfg.train.seed)
            models.append(EMOE(cfg.model, fast_path=cfg.train.fast_path))
        params, buffers = stack_module_state(models)
        self.params = {n: p.detach().to(device).requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        self.names = list(self.params)
        self.template = models[0].to("meta")
        self.members = [_Member(k, cfg, device, len(self.names)) for k, cfg in enumerate(cfgs)]
        self.plan_models = [m.to("meta") for m in models]  # dropout plans are recorded on meta tensors
        self.dropout = PlannedDropout([m.drop_gen for m in self.members], device, stacked=True)
        self.template.set_dropout_source(self.dropout.feed)
        self.optim = StackedAdam(self.params, [c.train for c in cfgs], fused=cfgs[0].train.fast_path)
        self.device = device
        c0 = cfgs[0]
        self.loss_kind, self.fusion = c0.loss, c0.model.fusion
        # train.compile: graphs: each window's vmapped forward and backward captured once per shape and
        # replayed (emoe.capture; off without CUDA, after one warning)
        self.graphs = effective_mode(c0.train.compile, device) == "graphs"
        self._graphs: dict[Any, Any] = {}
        self._refresh_scalars()

    def _refresh_scalars(self) -> None:
        cfgs = [m.cfg for m in self.members]
        self.loss_weights = torch.tensor([[getattr(c.loss, w) for w in LOSS_WEIGHTS] for c in cfgs],
                                         dtype=torch.float32, device=self.device)  # (K, 4)

    def keep(self, index: list[int]) -> None:
        """Keep only the members at positions ``index`` (the others stopped)."""
        sel = torch.tensor(index, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.params = {n: p.index_select(0, sel).detach().requires_grad_(True) for n, p in self.params.items()}
        self.buffers = {n: b.index_select(0, sel) for n, b in self.buffers.items()}
        self.optim.keep(index, self.params)
        self.members = [self.members[i] for i in index]
        self.plan_models = [self.plan_models[i] for i in index]
        self.dropout.keep(index)
        self._refresh_scalars()
        self._graphs.clear()  # captured for the old parameters

    # --- the vmapped step ---------------------------------------------------------------------------
    def _terms(self, pred: torch.Tensor, uni_pred: torch.Tensor, w: torch.Tensor, p_uni: torch.Tensor,
               p_fused: torch.Tensor, labels: torch.Tensor, term_weights: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's loss terms for one member (router weights ``w``, its loss weights ``term_weights``):
        total and (6,) terms."""
        out = ModelOutput(pred=pred, uni_pred=uni_pred, weights=w, h=p_uni, p_uni=p_uni, p_fused=p_fused)
        terms = total_loss(out, labels, self.loss_kind, self.fusion, term_weights=term_weights)
        return terms.total, terms.stacked()

    def _member_loss(self, params: dict, buffers: dict, text: torch.Tensor, audio: torch.Tensor,
                     vision: torch.Tensor, labels: torch.Tensor, masks: list, weights: torch.Tensor, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's forward over a window's rows (batches of ``size`` one after another, the last may
        be shorter) and each batch's loss: the sum of the totals and the (W, 6) terms."""
        self.dropout.feed.set(masks)
        out = functional_call(self.template, (params, buffers), (), {"text": text, "audio": audio, "vision": vision})
        outs = (out.pred, out.uni_pred, out.weights, out.p_uni, out.p_fused, labels)
        q, rest = divmod(text.shape[0], size)
        terms = functools.partial(self._terms, term_weights=weights)
        totals, vals = [], []
        if q:
            total, val = vmap(terms)(*(t[:q * size].unflatten(0, (q, size)) for t in outs))
            totals.append(total.sum())
            vals.append(val)
        if rest:
            total, val = terms(*(t[q * size:] for t in outs))
            totals.append(total)
            vals.append(val.unsqueeze(0))
        return (totals[0] if len(totals) == 1 else totals[0] + totals[1]), torch.cat(vals)

    def _plans(self, rows: int, like: tuple[torch.Tensor, ...], cfg: EMOEConfig) -> list[list[DropoutSite]]:
        """Every member's dropout sites for a forward over ``rows`` rows, recorded once: the rates on each
        member's meta copy; under bf16 autocast, which meta tensors do not see, the dtypes from one real
        forward of the first member on ``like``'s first rows (so its masks are bf16 where it computes in bf16)."""
        def record() -> list[list[DropoutSite]]:
            text, audio, vision = (torch.empty((rows, *t.shape[2:]), dtype=t.dtype, device="meta") for t in like)
            with autocast_context(cfg, self.device):
                plans = [record_plan(m, lambda m=m: m(text=text, audio=audio, vision=vision), stacked=True)
                         for m in self.plan_models]
            if not bf16_active(cfg, self.device):
                return plans
            weights = ({n: p[0].detach() for n, p in self.params.items()}, {n: b[0] for n, b in self.buffers.items()})
            real = {name: t[0, :rows] for name, t in zip(("text", "audio", "vision"), like)}
            self.template.train()
            with autocast_context(cfg, self.device):
                sites = record_plan(self.template, lambda: functional_call(self.template, weights, (), real),
                                    stacked=True)
            return [[dataclasses.replace(s, dtype=r.dtype) for s, r in zip(plan, sites, strict=True)] for plan in plans]

        for m in self.plan_models:
            m.train()
        return self.dropout.plans(rows, record)

    def _window_masks(self, n: int, size: int, like: tuple[torch.Tensor, ...], cfg: EMOEConfig
                      ) -> list[torch.Tensor | None] | None:
        """(K, n, ...) masks for a forward over a window's ``n`` rows (``emoe.dropout.window_masks``); None
        where the sites do not join along the batch axis (then the window runs batch by batch)."""
        return window_masks(self.dropout, lambda rows: (rows, self._plans(rows, like, cfg)), n, size)

    def train_window(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
                     cfg: EMOEConfig, size: int) -> torch.Tensor:
        """Forward + backward of a window's batches (``size`` rows each, one after another; inputs (K, n, ...))
        for every member, in one vmapped forward; returns the (K, W, 6) loss terms. One batch is a window
        of one; where the dropout sites do not stack along the batch axis, batch by batch."""
        n = text.shape[1]
        masks = self._window_masks(n, size, (text, audio, vision), cfg)
        if masks is None:
            return torch.cat([self.train_window(text[:, s:s + size], audio[:, s:s + size], vision[:, s:s + size],
                                                labels[:, s:s + size], cfg, size) for s in range(0, n, size)], dim=1)
        self.template.train()
        if self.graphs:
            total, vals = self._replay(text, audio, vision, labels, masks, cfg, size)
        else:
            total, vals = self._window_loss(text, audio, vision, labels, masks, self.loss_weights, self.params,
                                            cfg, size)
        total.backward()
        return vals

    def _window_loss(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
                     masks: list[torch.Tensor | None], weights: torch.Tensor, params: dict[str, torch.Tensor],
                     cfg: EMOEConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's forward and losses over a window: (the sum of all totals, (K, W, 6) terms)."""
        with autocast_context(cfg, self.device):
            mask_dims = [None if m is None else 0 for m in masks]
            total, vals = vmap(self._member_loss, in_dims=(0, 0, 0, 0, 0, 0, mask_dims, 0, None))(
                params, self.buffers, text, audio, vision, labels, masks, weights, size)
        return total.sum(), vals

    def _replay(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor,
                masks: list[torch.Tensor | None], cfg: EMOEConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``_window_loss`` replayed from CUDA graphs captured for inputs of these shapes: the rows, masks and
        loss weights are copied into the graphs' inputs, the stacked parameters are read where they are
        (the optimiser updates them in place) and get their gradients as eager ones would (each holds a
        gradient of its own first: see ``emoe.capture``). A capture that fails runs eagerly after a warning."""
        drawn = [m for m in masks if m is not None]
        params = [self.params[n] for n in self.names]
        args = (text, audio, vision, labels, self.loss_weights, *drawn)
        key = (tuple((t.shape, t.dtype) for t in args), tuple(m is None for m in masks), size)
        if key not in self._graphs:
            names, count = self.names, len(drawn)

            def body(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                t, a, v, y, w = tensors[:5]
                return self._window_loss(t, a, v, y, refill(masks, tensors[5:5 + count]) or [], w,
                                         dict(zip(names, tensors[5 + count:])), cfg, size)

            try:  # the parameters are the graphs' own inputs, read in place (never copied)
                self._graphs[key] = capture(body, (*(t.detach().clone() for t in args), *params), params)
            except Exception as exc:  # an op that cannot be captured: eager from here on, said once
                capture_failed(exc, "the stacked training step", stacklevel=3)
                self.graphs, self._graphs = False, {}
                return self._window_loss(text, audio, vision, labels, masks, self.loss_weights, self.params, cfg,
                                         size)
        graphed, trained = self._graphs[key]
        own_gradients(trained)
        return graphed(*args, *params)

    def _eval_forward(self, params: dict, buffers: dict, text: torch.Tensor, audio: torch.Tensor,
                      vision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = functional_call(self.template, (params, buffers), (), {"text": text, "audio": audio, "vision": vision})
        return out.pred.float(), out.weights.float()

    @torch.no_grad()
    def evaluate(self, split: Split, cfg: EMOEConfig, kind: str) -> list[tuple[dict, Any] | NonFiniteOutput]:
        """Every member's ``evaluate`` on ``split`` (one vmapped forward per batch): metrics and router
        record, or the ``NonFiniteOutput`` it raised."""
        self.template.eval()
        preds, weights = [], []
        with autocast_context(cfg, self.device):
            for batch in iter_batches(split, cfg.train.eval_batch_size, device=self.device):
                p, w = vmap(self._eval_forward, in_dims=(0, 0, None, None, None))(
                    self.params, self.buffers, batch.text, batch.audio, batch.vision)
                preds.append(p)
                weights.append(w)
        pred, w = torch.cat(preds, dim=1), torch.cat(weights, dim=1)  # (K, N, n_out), (K, N, 3)
        out: list[tuple[dict, Any] | NonFiniteOutput] = []
        for k, member in enumerate(self.members):
            try:
                out.append(summarize(pred[k], w[k], split, member.cfg, kind))
            except NonFiniteOutput as exc:
                out.append(exc)
        return out


def _gather(split: Split, orders: list[torch.Tensor], start: int, size: int, device: torch.device
            ) -> tuple[torch.Tensor, ...]:
    """(K, B, ...) text, audio, vision and (K, B) labels: each member's next batch in its own order."""
    resident = resident_arrays(split, device)
    if resident is not None:  # cut on the device
        rows = torch.stack([o[start:start + size] for o in orders]).to(resident[0].device, non_blocking=True)
        return tuple(a[rows] for a in resident)
    idx = [o[start:start + size].numpy() for o in orders]
    return tuple(torch.from_numpy(np.stack([np.ascontiguousarray(getattr(split, f)[i]) for i in idx])).to(device)
                 for f in ("text", "audio", "vision", "labels"))


def _train_epoch(stack: _Stack, split: Split, cfg: EMOEConfig) -> dict[int, str]:
    """One epoch for every member in the stack; returns {member position: divergence message}. Members
    that diverge leave the stack at the end of their window (no step with their gradients); each member's
    mean loss terms are left in ``member.losses``."""
    t = cfg.train
    n_batches = math.ceil(len(split) / t.batch_size)
    orders = [torch.randperm(len(split), generator=m.data_gen) for m in stack.members]
    k = len(stack.members)
    sums = torch.zeros(k, len(EPOCH_LOSSES), device=stack.device)
    first_bad = torch.full((k,), -1, dtype=torch.long, device=stack.device)
    bad_value = torch.zeros(k, device=stack.device)
    diverged: dict[int, str] = {}
    # a chunk: the batches of one forward, a whole accumulation window or one batch (batches_per_forward)
    chunk = batches_per_forward(cfg, stack.device, len(stack.members))
    for c in range(0, n_batches, chunk):
        i = min(c + chunk, n_batches) - 1  # the chunk's last batch
        if c % t.update_epochs == 0:
            stack.optim.zero_grad()
        rows = min(len(split), (i + 1) * t.batch_size) - c * t.batch_size
        text, audio, vision, labels = _gather(split, orders, c * t.batch_size, rows, stack.device)
        vals = stack.train_window(text, audio, vision, labels, cfg, t.batch_size)  # (K, W, 6)
        sums += vals.sum(1)
        bad = ~torch.isfinite(vals[:, :, 0])  # (K, W)
        at = torch.argmax(bad.to(torch.uint8), dim=1)  # each member's first bad batch of the chunk
        newly_bad = bad.any(1) & (first_bad < 0)
        first_bad = torch.where(newly_bad, c + at, first_bad)
        bad_value = torch.where(newly_bad, vals[:, :, 0].gather(1, at.unsqueeze(1)).squeeze(1), bad_value)
        if (i + 1) % t.update_epochs and i + 1 < n_batches:
            continue
        norms = stack.optim.grad_norms().to(stack.device)
        host = torch.stack([first_bad.double(), bad_value.double(), norms.double()]).tolist()  # one sync
        epoch = [m.epoch + 1 for m in stack.members]
        out = []
        for pos, (bad, loss, norm) in enumerate(zip(*host)):
            if bad >= 0:
                out.append(pos)
                diverged[stack.members[pos].index] = (
                    f"diverged: non-finite training loss ({_nonfinite_name(loss)}) at epoch {epoch[pos]}, "
                    f"batch {int(bad) + 1}")
            elif not math.isfinite(norm):
                out.append(pos)
                diverged[stack.members[pos].index] = (
                    f"diverged: non-finite gradient norm ({_nonfinite_name(norm)}) at epoch {epoch[pos]}, batch {i + 1}")
        if out:
            keep = [p for p in range(len(stack.members)) if p not in out]
            for p in out:
                stack.members[p].status, stack.members[p].error = "diverged", diverged[stack.members[p].index]
            if not keep:  # every member diverged: none goes on (fit_stacked then stops)
                stack.keep([])
                return diverged
            sel = torch.tensor(keep, dtype=torch.long, device=stack.device)
            grads = {n: p.grad.index_select(0, sel) if p.grad is not None else None for n, p in stack.params.items()}
            orders = [orders[p] for p in keep]
            sums, first_bad, bad_value = sums[sel], first_bad[sel], bad_value[sel]
            norms = norms[sel]
            stack.keep(keep)
            for n, g in grads.items():
                stack.params[n].grad = g
        stack.optim.clip(norms)
        stack.optim.step()
    means = (sums / max(n_batches, 1)).tolist()
    for member, row in zip(stack.members, means):
        member.losses = dict(zip(EPOCH_LOSSES, row))  # type: ignore[attr-defined]
    return diverged


def _checkpoint(stack: _Stack, pos: int) -> dict[str, Any]:
    """Member ``pos``'s full training state in ``emoe.train.fit``'s format (views of live tensors)."""
    m = stack.members[pos]
    return {
        Key.VERSION: STATE_VERSION, Key.CONFIG: to_dict(m.cfg), Key.EPOCH: m.epoch,
        Key.MODEL: {n: p[pos].detach() for n, p in stack.params.items()},
        Key.OPTIMIZER: stack.optim.member_state(pos), Key.SCHEDULER: m.scheduler.state_dict(),
        Key.BEST_LOSS: m.sel.loss, Key.BEST_EPOCH: m.sel.epoch, Key.BEST_VALID: dict(m.sel.valid),
        Key.BEST_TEST: dict(m.sel.test), Key.BEST_ROUTER: router_to_state(m.sel.router),
        Key.BEST_VALID_ROUTER: router_to_state(m.sel.valid_router),
        Key.GENERATOR: m.data_gen.get_state(), Key.TORCH_RNG: m.drop_gen.get_state(), Key.CUDA_RNG: [],
        Key.HISTORY: [record_to_state(r) for r in m.history],
    }


def _resume(stack: _Stack, pos: int, state: dict[str, Any]) -> None:
    m = stack.members[pos]
    _check_resume(state, m.cfg)
    with torch.no_grad():
        for n, p in stack.params.items():
            p[pos] = state[Key.MODEL][n].to(p)
    stack.optim.load_member_state(pos, state[Key.OPTIMIZER])
    m.scheduler.load_state_dict(state[Key.SCHEDULER])
    m.lr_holder.param_groups[0]["lr"] = stack.optim.lrs[pos]
    m.data_gen.set_state(state[Key.GENERATOR])
    restore_dropout_generator(m.drop_gen, state[Key.TORCH_RNG], m.cfg.train.seed, int(state[Key.EPOCH]))
    m.sel = _Selection(float(state[Key.BEST_LOSS]), int(state[Key.BEST_EPOCH]), dict(state[Key.BEST_VALID]),
                       dict(state[Key.BEST_TEST]), router_from_state(state[Key.BEST_ROUTER]),
                       router_from_state(state.get(Key.BEST_VALID_ROUTER)))
    m.history = [record_from_state(r) for r in state[Key.HISTORY]]
    m.epoch = int(state[Key.EPOCH])


def _result(m: _Member, device: torch.device) -> FitResult:
    return FitResult(status=m.status, best_epoch=m.sel.epoch, epochs_run=len(m.history),  # type: ignore[arg-type]
                     valid=m.sel.valid, test=m.sel.test, history=m.history, router=m.sel.router, error=m.error,
                     valid_router=m.sel.valid_router,
                     extra={"device": str(device), "stopped_by_callback": m.stopped_by_callback,
                            "final_lr": m.lr, "stacked": True})


def fit_stacked(cfgs: list[EMOEConfig], data: DataSet, *, on_epoch: OnMemberEpoch | None = None,
                resume: list[dict[str, Any] | None] | None = None,
                on_stack_epoch: Callable[[list[FitResult]], None] | None = None) -> list[FitResult]:
    """Train every configuration of ``cfgs`` (one stack, see ``check_stackable``) on ``data`` as one batched
    model; returns one ``FitResult`` per member, in order, each what ``emoe.train.train_emoe`` gives alone.

    Each member is built under its own seed, then every epoch: train (one vmapped step per window, or per
    batch), evaluate validation (and test when the member improved), step its plateau scheduler, record its
    epoch and call ``on_epoch(member, record, checkpoint)``. A member leaves the stack when its patience or
    budget is spent, its callback returns True, or it diverges (its status "diverged", the others go on).
    ``resume``: per member a state from ``checkpoint()`` or ``emoe.train.fit`` (or None to start afresh).
    ``on_stack_epoch(results)``: after every member's ``on_epoch`` of an epoch (their ``checkpoint()``
    still valid), every member's result so far, in order (a member that diverged in that epoch says so):
    e.g. one report per epoch for the whole stack.
    """
    errors = check_stackable(cfgs)
    for k, cfg in enumerate(cfgs):
        try:
            check_data_fits(cfg, data)
        except ConfigError as exc:
            errors += [f"member {k}: {e}" for e in exc.errors]
    if errors:
        raise ConfigError(errors)
    for name, split in data.splits().items():
        if len(split) == 0:
            raise ValueError(f"data.{name}: the split is empty")
    cfg0 = cfgs[0]
    device = resolve_device(cfg0.train.device)
    stack = _Stack(cfgs, device)
    every = list(stack.members)
    for pos, state in enumerate(resume or []):
        if state is not None:
            _resume(stack, pos, state)
    stack.keep([p for p, m in enumerate(stack.members) if m.more_epochs()])
    while stack.members:
        start = time.perf_counter()
        lrs = [m.lr for m in stack.members]
        stack.optim.lrs = list(lrs)
        lr_at = {m.index: lr for m, lr in zip(stack.members, lrs)}
        _train_epoch(stack, data.train, cfg0)  # diverged members have left the stack
        if not stack.members:
            break
        for m in stack.members:
            m.epoch += 1
        valid = stack.evaluate(data.valid, cfg0, data.label_kind)
        improved = [not isinstance(v, Exception) and v[0]["loss"] <= m.sel.loss - m.cfg.train.min_delta
                    for m, v in zip(stack.members, valid)]
        test = stack.evaluate(data.test, cfg0, data.label_kind) if any(improved) else [None] * len(improved)
        elapsed = time.perf_counter() - start
        keep = []
        for pos, (m, v, imp, te) in enumerate(zip(stack.members, valid, improved, test)):
            if isinstance(v, NonFiniteOutput) or (imp and isinstance(te, NonFiniteOutput)):
                where, bad = ("validation", v) if isinstance(v, NonFiniteOutput) else ("test", te)
                m.status, m.error = "diverged", f"diverged: non-finite {where} predictions at epoch {m.epoch} ({bad})"
                continue
            metrics, vrec = v
            if imp:
                m.sel = _Selection(metrics["loss"], m.epoch, metrics, te[0], te[1], vrec)  # type: ignore[index]
            m.scheduler.step(metrics["loss"])
            stack.optim.set_lr(pos, m.lr)  # a plateau cut is in the member's state from now on, as in fit's
            mean_w = vrec.weights.mean(axis=0)
            record = EpochRecord(
                epoch=m.epoch, train=m.losses, valid=metrics, lr=lr_at[m.index], improved=imp,  # type: ignore[attr-defined]
                best_epoch=m.sel.epoch, test=te[0] if imp else None,  # type: ignore[index]
                router_mean={f"w_{mod}": float(w) for mod, w in zip(MODALITIES, mean_w)},
                time_s=elapsed / len(stack.members), last=not m.more_epochs())
            m.history.append(record)
            if on_epoch is not None and on_epoch(m.index, record, functools.partial(_checkpoint, stack, pos)) is True:
                m.stopped_by_callback = True
                continue
            if m.more_epochs():
                keep.append(pos)
        if on_stack_epoch is not None:
            on_stack_epoch([_result(m, device) for m in every])
        if keep != list(range(len(stack.members))):
            stack.keep(keep)
    return [_result(m, device) for m in every]

