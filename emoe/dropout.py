"""Where the model's dropout masks come from: the global generator, or a plan drawn from a run's own generator.

Every dropout in EMOE calls its module's ``drop(x, p, training)``. By default that is ``F.dropout`` on
torch's global generator (``NATIVE``), and attention may drop inside ``scaled_dot_product_attention``.
Training runs use a ``MaskFeed`` instead: the dropout *sites* of one forward pass (shape, dtype, rate) are
recorded once (``record_plan``), and before each batch every run draws one flat uniform vector from its own
generator (``draw_masks``) that is cut into that batch's masks. A run's masks then depend only on its own
generator, so K runs stacked into one batched model (``emoe.stack``) draw exactly the masks each would
draw alone, and a captured step can take its masks as plain input tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NATIVE", "DropoutSite", "MaskFeed", "NativeDropout", "PlannedDropout", "cut_masks", "draw_masks",
           "draw_uniforms", "keep_rates", "record_plan", "set_dropout_source", "window_masks"]


class NativeDropout:
    """``F.dropout`` on the global generator; attention may use the fused kernel's own dropout."""

    def sdpa(self, p: float) -> bool:
        """Whether attention with dropout rate ``p`` may run in ``scaled_dot_product_attention``."""
        return True

    def __call__(self, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        return F.dropout(x, p, training)


NATIVE = NativeDropout()


@dataclass(frozen=True)
class DropoutSite:
    """One dropout of a training forward pass: the tensor's shape and dtype and the rate."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    p: float


class _Recorder:
    """Records the sites of one forward pass (the values pass through untouched)."""

    def __init__(self, stacked: bool):
        self.stacked, self.sites = stacked, []  # type: ignore[var-annotated]

    def sdpa(self, p: float) -> bool:
        return not self.stacked and p == 0.0

    def __call__(self, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        if training:
            self.sites.append(DropoutSite(tuple(x.shape), x.dtype, float(p)))
        return x


class MaskFeed:
    """Applies given masks in site order: ``masks[i]`` (already scaled by 1/(1-p)) or None (rate 0).

    ``stacked``: the model runs under ``torch.func.vmap`` over members (no fused attention there).
    Set ``masks`` before each training forward; evaluation (not training) uses none.
    """

    def __init__(self, stacked: bool = False):
        self.stacked = stacked
        self.masks: Sequence[torch.Tensor | None] = ()
        self._next = 0

    def set(self, masks: Sequence[torch.Tensor | None]) -> None:
        self.masks, self._next = masks, 0

    def sdpa(self, p: float) -> bool:
        return not self.stacked and p == 0.0

    def __call__(self, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        if not training:
            return x
        if self._next >= len(self.masks):
            raise RuntimeError("dropout: more dropout sites than drawn masks (the plan does not fit this batch)")
        mask = self.masks[self._next]
        self._next += 1
        return x if mask is None else x * mask


def set_dropout_source(model: nn.Module, source: object) -> None:
    """Make every module of ``model`` that drops (has a ``drop`` attribute) use ``source``."""
    for module in model.modules():
        if hasattr(module, "drop"):
            setattr(module, "drop", source)  # noqa: B010 - any module with a drop attribute


def record_plan(model: nn.Module, forward: object, *, stacked: bool = False) -> list[DropoutSite]:
    """The dropout sites of ``forward()`` (a call of ``model`` in training mode, e.g. on meta tensors)."""
    recorder = _Recorder(stacked)
    previous = {m: m.drop for m in model.modules() if hasattr(m, "drop")}
    set_dropout_source(model, recorder)
    try:
        with torch.no_grad():
            forward()  # type: ignore[operator]
    finally:
        for m, src in previous.items():
            m.drop = src
    return recorder.sites


def draw_uniforms(plans: Sequence[Sequence[DropoutSite]], generators: Sequence[torch.Generator],
                  device: torch.device) -> list[torch.Tensor | None]:
    """One flat float32 uniform vector per run for its sites with p > 0 (None when it has none): the
    only random draw of a batch, so a run's generator advances exactly as it would alone."""
    out: list[torch.Tensor | None] = []
    for plan, gen in zip(plans, generators):
        total = sum(_numel(s.shape) for s in plan if s.p > 0)
        out.append(torch.rand(total, generator=gen, device=device) if total else None)
    return out


def keep_rates(plan: Sequence[DropoutSite], dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """1 - p for every element ``draw_uniforms`` draws for ``plan`` (its sites with p > 0, in order), in the
    uniforms' dtype, or None when it draws none: what ``cut_masks`` compares a whole draw against."""
    parts = [torch.full((_numel(s.shape),), 1.0 - s.p, dtype=dtype, device=device) for s in plan if s.p > 0]
    return torch.cat(parts) if parts else None


def cut_masks(plans: Sequence[Sequence[DropoutSite]], uniforms: Sequence[torch.Tensor | None], *,
              stacked: bool = False, keep: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """The masks cut from ``draw_uniforms``' vectors: keep = u < 1 - p, mask = keep / (1 - p).

    Plain tensor arithmetic (no random draw, so it can run inside a compiled or captured step). K = 1:
    one mask per site (None at rate 0); ``stacked`` (any K): (K, *shape) per site, ones for a run whose
    rate there is 0 (None where every run's is). ``keep``: the runs' common ``keep_rates`` (all runs with
    the same rates at every site): every mask is then a view of one comparison and one division over the
    whole draw (two kernels for the batch instead of three per site and run; the same values).
    """
    if keep is not None and all(u is not None for u in uniforms):
        return _cut_whole(plans[0], uniforms, keep, stacked)  # type: ignore[arg-type]
    per_run: list[list[torch.Tensor | None]] = []
    for plan, u in zip(plans, uniforms):
        masks: list[torch.Tensor | None] = []
        offset = 0
        for site in plan:
            if site.p > 0:
                n = _numel(site.shape)
                kept = u[offset:offset + n].view(site.shape) < (1.0 - site.p)  # type: ignore[index]
                masks.append(kept.to(site.dtype) / (1.0 - site.p))
                offset += n
            else:
                masks.append(None)
        per_run.append(masks)
    if not stacked:
        if len(per_run) != 1:
            raise ValueError(f"cut_masks: {len(per_run)} runs need stacked=True")
        return per_run[0]
    out: list[torch.Tensor | None] = []
    for i, site in enumerate(plans[0]):
        column = [run[i] for run in per_run]
        if all(m is None for m in column):
            out.append(None)
            continue
        device = next(m for m in column if m is not None).device
        ones = torch.ones(site.shape, dtype=site.dtype, device=device)
        out.append(torch.stack([ones if m is None else m for m in column]))
    return out


def _cut_whole(plan: Sequence[DropoutSite], uniforms: Sequence[torch.Tensor], keep: torch.Tensor,
               stacked: bool) -> list[torch.Tensor | None]:
    """``cut_masks`` for runs with the same rates: masks for the whole draw at once, cut into views."""
    if not stacked and len(uniforms) != 1:
        raise ValueError(f"cut_masks: {len(uniforms)} runs need stacked=True")
    u = torch.stack(list(uniforms)) if stacked else uniforms[0]  # (K, T) or (T,)
    if u.shape[-1] != keep.shape[0]:
        raise ValueError(f"cut_masks: {u.shape[-1]} uniforms drawn, the rates cover {keep.shape[0]}")
    whole = torch.div(u < keep, keep)  # 1/(1-p) where kept, else 0: kept.to(dtype) / (1-p), as per site
    lead = tuple(u.shape[:-1])
    by_dtype = {whole.dtype: whole}
    out: list[torch.Tensor | None] = []
    offset = 0
    for site in plan:
        if site.p <= 0:
            out.append(None)
            continue
        n = _numel(site.shape)
        if site.dtype not in by_dtype:
            # a narrower float (bf16/fp16 under autocast) rounds the same float32 quotient the per-site
            # division computes; a wider one would differ, so it divides per site as cut_masks does
            exact = whole.dtype == torch.float32 and site.dtype in (torch.bfloat16, torch.float16)
            by_dtype[site.dtype] = whole.to(site.dtype) if exact else None  # type: ignore[assignment]
        src = by_dtype[site.dtype]
        if src is None:
            kept = u[..., offset:offset + n] < (1.0 - site.p)
            out.append((kept.to(site.dtype) / (1.0 - site.p)).view(*lead, *site.shape))
        else:
            out.append(src[..., offset:offset + n].view(*lead, *site.shape))
        offset += n
    return out


def window_masks(dropout: PlannedDropout, plans_for: Callable[[int], tuple[Hashable, list[list[DropoutSite]]]],
                 n: int, size: int) -> list[torch.Tensor | None] | None:
    """The masks of one forward over ``n`` rows made of batches of ``size`` rows (the last may be shorter):
    each run's draw for each batch, in batch order, as batch by batch, joined along the rows; (n, ...) per
    site for one run, (K, n, ...) for a stacked ``dropout``. ``plans_for(rows)`` gives the plans' key and
    the runs' plans for a forward over ``rows`` rows. None where the sites of the whole forward are not
    the batches' sites joined along their first axis (the forward must then run batch by batch)."""
    q, rest = divmod(n, size)
    if n > size:  # more than one batch: the sites must concatenate along the batch axis
        whole = plans_for(n)[1][0]
        for rows in {size, rest} - {0}:
            if [(s.shape, s.dtype, s.p) for s in whole] != [((n, *s.shape[1:]), s.dtype, s.p)
                                                           for s in plans_for(rows)[1][0]]:
                return None
    k = len(dropout.generators)
    parts: list[list[torch.Tensor | None]] = []
    for count, rows in ((q, size), (1 if rest else 0, rest)):
        if count == 0:
            continue
        key, plans = plans_for(rows)
        uniforms = [u for _ in range(count) for u in dropout.uniforms(plans)]  # (batch, run) order
        keep = dropout.keep_rates(key, uniforms[0].dtype) if uniforms[0] is not None else None
        masks = cut_masks(plans * count, uniforms, stacked=True, keep=keep)
        parts.append([None if m is None else m.unflatten(0, (count, k)).transpose(0, 1).flatten(1, 2)
                      for m in masks])  # (count * K, rows, ...) -> (K, count * rows, ...)
    joined = parts[0] if len(parts) == 1 else [None if a is None else torch.cat([a, b], dim=1)
                                               for a, b in zip(*parts)]
    return joined if dropout.feed.stacked else [None if m is None else m[0] for m in joined]


def draw_masks(plans: Sequence[Sequence[DropoutSite]], generators: Sequence[torch.Generator],
               device: torch.device) -> list[torch.Tensor | None]:
    """One batch's masks for K runs (plans and generators per run, the same sites in the same order)."""
    return cut_masks(plans, draw_uniforms(plans, generators, device), stacked=len(plans) > 1)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class PlannedDropout:
    """The masks of K runs' training batches: plans recorded once per batch shape, masks drawn per batch.

    ``generators`` (one per run) are the runs' dropout generators, on the device the masks live on.
    ``plans(key, record)`` gives the runs' plans (``record()`` is called only the first time a ``key``,
    e.g. the batch size, is seen); ``uniforms(plans)`` draws a batch; ``cut_masks`` turns it into masks.
    """

    def __init__(self, generators: Sequence[torch.Generator], device: torch.device, *, stacked: bool = False):
        self.generators = list(generators)
        self.device = device
        self.feed = MaskFeed(stacked)
        self._plans: dict[Hashable, list[list[DropoutSite]]] = {}
        self._keep: dict[tuple[Hashable, torch.dtype], torch.Tensor | None] = {}

    def plans(self, key: Hashable, record: Callable[[], list[list[DropoutSite]]]) -> list[list[DropoutSite]]:
        """The runs' plans for ``key``, recorded by ``record()`` the first time."""
        if key not in self._plans:
            plans = record()
            if len({tuple((s.shape, s.dtype) for s in plan) for plan in plans}) > 1:
                raise RuntimeError("dropout: the runs' dropout sites differ (not stackable)")
            self._plans[key] = plans
        return self._plans[key]

    def uniforms(self, plans: list[list[DropoutSite]]) -> list[torch.Tensor | None]:
        """The next batch's uniform draws (``draw_uniforms``) from the runs' generators."""
        return draw_uniforms(plans, self.generators, self.device)

    def keep_rates(self, key: Hashable, dtype: torch.dtype) -> torch.Tensor | None:
        """``keep_rates`` of the plans recorded for ``key`` (cached), for uniforms of ``dtype``; None when the
        runs' rates differ somewhere (``cut_masks`` then cuts per site and run) or nothing is drawn."""
        if (key, dtype) not in self._keep:
            plans = self._plans[key]
            same = all(plan == plans[0] for plan in plans[1:])
            self._keep[key, dtype] = keep_rates(plans[0], dtype, self.device) if same else None
        return self._keep[key, dtype]

    def keep(self, index: list[int]) -> None:
        """Keep only the runs at ``index`` (e.g. after some stopped), in that order."""
        self.generators = [self.generators[i] for i in index]
        self._plans = {k: [plans[i] for i in index] for k, plans in self._plans.items()}
        self._keep.clear()
