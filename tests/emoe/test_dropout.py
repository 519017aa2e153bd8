"""Dropout masks from a run's own draw: cutting the whole draw at once gives the per-site masks exactly."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from emoe.dropout import DropoutSite, PlannedDropout, cut_masks, draw_uniforms, keep_rates

CPU = torch.device("cpu")
# views and metadata ops launch no kernel; everything else dispatched counts as one
_FREE = {"view", "slice", "detach", "alias", "_unsafe_view", "expand", "select", "unsqueeze", "t", "transpose"}


class _Kernels(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.overloadpacket.__name__
        if name not in _FREE:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def plan(dtype: torch.dtype = torch.float32) -> list[DropoutSite]:
    rates = [0.5, 0.0, 0.2, 0.3, 0.1, 0.0, 0.1, 0.5, 0.25, 0.75]
    shapes = [(4, 8, 6), (4, 8), (2, 3, 4, 5), (4, 8, 6), (4, 6), (3,), (7,), (4, 1), (5, 5), (4, 8, 6)]
    return [DropoutSite(s, dtype, p) for s, p in zip(shapes, rates)]


def per_site(plans, uniforms, stacked=False):  # type: ignore[no-untyped-def]
    return cut_masks(plans, uniforms, stacked=stacked)  # no keep rates: the per-site, per-run arithmetic


def assert_same(got, want) -> None:  # type: ignore[no-untyped-def]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            assert g.shape == w.shape and g.dtype == w.dtype
            assert torch.equal(g, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3])
def test_whole_draw_cut_equals_the_per_site_masks(dtype, k):
    p = plan(dtype)
    gens = [torch.Generator().manual_seed(s) for s in range(k)]
    uniforms = [torch.rand(sum(torch.Size(s.shape).numel() for s in p if s.p > 0), generator=g, dtype=dtype)
                for g in gens]
    keep = keep_rates(p, dtype, CPU)
    stacked = k > 1
    assert_same(cut_masks([p] * k, uniforms, stacked=stacked, keep=keep), per_site([p] * k, uniforms, stacked))


def test_uniforms_on_the_threshold_decide_as_per_site():
    """Values at and next to float32(1 - p): the comparison is the same one, in the uniforms' dtype."""
    p = [DropoutSite((6,), torch.float32, rate) for rate in (0.1, 0.2, 0.3)]
    u = []
    for site in p:
        edge = torch.tensor(1.0 - site.p, dtype=torch.float32)
        u += [edge, torch.nextafter(edge, torch.tensor(0.0)), torch.nextafter(edge, torch.tensor(1.0)),
              torch.tensor(0.0), torch.tensor(0.999999), edge]
    uniforms = [torch.stack(u)]
    got = cut_masks([p], uniforms, keep=keep_rates(p, torch.float32, CPU))
    assert_same(got, per_site([p], uniforms))
    assert got[0][0] == 0 and got[0][1] == pytest.approx(1 / 0.9) and got[0][3] == pytest.approx(1 / 0.9)


def test_narrower_and_wider_sites_than_the_draw_keep_their_per_site_values():
    """bf16 sites (autocast) round the float32 quotient; a float64 site with float32 draws divides itself."""
    p = [DropoutSite((16, 8), torch.bfloat16, 0.3), DropoutSite((16,), torch.float64, 0.1),
         DropoutSite((4, 8), torch.float16, 0.5), DropoutSite((16, 8), torch.bfloat16, 0.1)]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    uniforms = draw_uniforms([p, p], gens, CPU)
    keep = keep_rates(p, torch.float32, CPU)
    assert_same(cut_masks([p, p], uniforms, stacked=True, keep=keep), per_site([p, p], uniforms, stacked=True))
    assert_same(cut_masks([p], uniforms[:1], keep=keep), per_site([p], uniforms[:1]))


def test_one_draw_is_cut_in_a_fixed_number_of_kernels():
    """The launches per batch do not grow with the sites or the members: what a GPU step is bound by."""
    p = plan() * 3  # 30 sites
    for k in (1, 4):
        uniforms = draw_uniforms([p] * k, [torch.Generator().manual_seed(s) for s in range(k)], CPU)
        keep = keep_rates(p, torch.float32, CPU)
        with _Kernels() as whole:
            cut_masks([p] * k, uniforms, stacked=k > 1, keep=keep)
        with _Kernels() as sites:
            per_site([p] * k, uniforms, stacked=k > 1)
        assert sum(whole.ops.values()) <= 3, whole.ops  # (stack,) lt, div
        assert sum(sites.ops.values()) >= 3 * 24 * k  # lt, to, div for each of the 24 sites with p > 0


def test_planned_dropout_shares_rates_only_between_runs_with_the_same_rates():
    p, q = plan(), [DropoutSite(s.shape, s.dtype, 0.4 if s.p else 0.0) for s in plan()]
    dropout = PlannedDropout([torch.Generator().manual_seed(s) for s in range(3)], CPU, stacked=True)
    plans = dropout.plans(8, lambda: [p, q, p])
    assert dropout.keep_rates(8, torch.float32) is None  # one run drops at other rates: per-site cut
    uniforms = dropout.uniforms(plans)
    assert_same(cut_masks(plans, uniforms, stacked=True, keep=None), per_site(plans, uniforms, stacked=True))
    dropout.keep([0, 2])  # the odd run left the stack: the two others share one cut again
    keep = dropout.keep_rates(8, torch.float32)
    assert keep is not None and torch.equal(keep, keep_rates(p, torch.float32, CPU))
    uniforms = dropout.uniforms(dropout.plans(8, lambda: []))
    assert_same(cut_masks([p, p], uniforms, stacked=True, keep=keep), per_site([p, p], uniforms, stacked=True))
