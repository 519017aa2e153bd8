"""The optimised training path gives the reference procedure's outputs: forward, gradients, Adam updates.

The reference procedure (``bench/reference_step.py``) is the speed baseline of ``bench/model_step.py``; the
fast path (fused attention, last-step-only last layer, deferred router weight gradient, fused Adam) must
compute the same thing. Also: the test split is only evaluated on epochs that improve validation.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import emoe.train
from bench.reference_step import reference_epoch, reference_forward, reference_optimizer
from emoe.config import EMOEConfig, ModelConfig, TrainConfig
from emoe.data.arrays import DataSet, Split
from emoe.losses import total_loss
from emoe.model import EMOE
from emoe.router import DeferredWeightGradLinear
from emoe.train import fit, make_optimizer, train_epoch

NO_DROPOUT = {name: 0.0 for name in ("text_dropout", "embed_dropout", "attn_dropout_l", "attn_dropout_v",
                                     "attn_dropout_a", "relu_dropout", "res_dropout", "out_dropout")}
SMALL = {"d_text": 12, "d_audio": 5, "d_vision": 6, "len_text": 8, "len_audio": 8, "len_vision": 8,
         "d_model": 16, "n_heads": 2, "n_levels": 2, "kernel_l": 3, "kernel_v": 3, "kernel_a": 3}


def model_cfg(**kw: object) -> ModelConfig:
    return ModelConfig(**{**SMALL, **kw})  # type: ignore[arg-type]


def random_split(cfg: ModelConfig, n: int, seed: int, dtype: type = np.float32) -> Split:
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, cfg.len_text, cfg.d_text)).astype(dtype)
    text[0, 2, 0] = 0.0  # the position-embedding quirk (first channel exactly 0) is exercised too
    return Split(text=text, audio=rng.normal(size=(n, cfg.len_audio, cfg.d_audio)).astype(dtype),
                 vision=rng.normal(size=(n, cfg.len_vision, cfg.d_vision)).astype(dtype),
                 labels=rng.uniform(-3, 3, n).astype(np.float32))


def tensors(split: Split, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(getattr(split, k)).to(dtype) for k in ("text", "audio", "vision")}


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("aligned", [True, False])
def test_fast_forward_equals_the_reference_forward(fusion, aligned):
    lengths = {} if aligned else {"len_audio": 11, "len_vision": 6}
    cfg = model_cfg(fusion=fusion, **lengths)
    torch.manual_seed(0)
    model = EMOE(cfg, fast_path=True).eval()
    x = tensors(random_split(cfg, 5, seed=1))
    fast = model(**x)
    ref = reference_forward(model, **x)
    for field in ("pred", "uni_pred", "weights", "h", "p_uni", "p_fused"):
        torch.testing.assert_close(getattr(fast, field), getattr(ref, field), rtol=1e-5, atol=1e-5)


def test_reference_forward_draws_dropout_like_the_model_plain_path():
    cfg = model_cfg(fusion="concat")  # default dropouts, all on
    torch.manual_seed(0)
    model = EMOE(cfg, fast_path=False).train()
    x = tensors(random_split(cfg, 4, seed=2))
    torch.manual_seed(5)
    ours = model(**x)
    torch.manual_seed(5)
    ref = reference_forward(model, **x)
    torch.manual_seed(6)
    other = reference_forward(model, **x)
    torch.testing.assert_close(ours.pred, ref.pred, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours.pred, other.pred)  # dropout is really on


@pytest.mark.parametrize("aligned", [True, False])
def test_deferred_router_gradient_equals_per_batch_accumulation(aligned):
    lengths = {} if aligned else {"len_audio": 11, "len_vision": 6}  # unaligned: inputs need gradients
    cfg = model_cfg(**lengths, **NO_DROPOUT)
    torch.manual_seed(0)
    model = EMOE(cfg).train()
    batches = [tensors(random_split(cfg, 4, seed=s)) for s in range(3)]
    labels = torch.linspace(-2, 2, 4)

    def accumulate(defer: bool, preset: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        if preset:  # a gradient already there is added to, not replaced
            for p in model.parameters():
                p.grad = torch.full_like(p, 0.5)
        model.set_deferred_grads(defer)
        for x in batches:
            total_loss(model(**x), labels, emoe.config.LossConfig(), "sum").total.backward()
        if defer:
            assert model.router.l1.pending == 3 and (model.router.l1.weight.grad is None) != preset
        model.flush_grads()
        model.set_deferred_grads(False)
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    for preset in (False, True):
        want, got = accumulate(False, preset), accumulate(True, preset)
        assert want.keys() == got.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_primed_products_are_explicit_and_equal_the_computed_ones():
    torch.manual_seed(0)
    layer = DeferredWeightGradLinear(6, 3)
    xs = [torch.randn(2, 6), torch.randn(3, 6)]
    want = [torch.nn.functional.linear(x, layer.weight, layer.bias) for x in xs]
    assert layer.prime(xs) is None  # not deferred: nothing primed
    layer.set_deferred(True)
    products = layer.prime(xs)
    assert products is not None and [p.shape for p in products] == [(2, 3), (3, 3)]
    for x, xw, w in zip(xs, products, want):
        torch.testing.assert_close(layer(x, xw), w)  # the product given for this batch is used
        torch.testing.assert_close(layer(x), w)  # none given: computed as usual
    assert layer.prime([x.requires_grad_() for x in xs]) is None  # inputs that need a gradient: never primed


def test_model_priming_is_an_explicit_argument_with_the_same_outputs():
    cfg = model_cfg(**NO_DROPOUT)
    torch.manual_seed(0)
    model = EMOE(cfg).train().set_deferred_grads(True)
    batches = [tensors(random_split(cfg, 4, seed=s)) for s in range(2)]
    primed = model.prime_router(batches)
    assert all(p is not None for p in primed)
    for x, p in zip(batches, primed):
        torch.testing.assert_close(model(**x, router_primed=p).pred, model(**x).pred)
    model.set_deferred_grads(False)


def test_deferral_records_nothing_without_gradients_and_rejects_3d_inputs():
    layer = DeferredWeightGradLinear(6, 2)
    layer.set_deferred(True)
    with torch.no_grad():
        layer(torch.randn(3, 6))
    assert layer.pending == 0
    out = layer(torch.randn(3, 6))
    out.sum().backward()
    assert layer.pending == 1 and layer.weight.grad is None and layer.bias.grad is not None
    layer.set_deferred(False)  # turning deferral off flushes
    assert layer.pending == 0 and layer.weight.grad is not None
    layer.set_deferred(True)
    with pytest.raises(ValueError, match="2-D input"):
        layer(torch.randn(2, 3, 6))


def _window_cfg(dtype_lr: float) -> EMOEConfig:
    train = TrainConfig(lr=dtype_lr, batch_size=4, update_epochs=3, device="cpu")
    return EMOEConfig(model=model_cfg(**NO_DROPOUT), train=train)


def test_one_fast_training_epoch_updates_parameters_like_the_reference_procedure(monkeypatch):
    primed_rows: list[int] = []  # rows of each window's single router product
    used_primed: list[bool] = []  # per forward of the router's first layer: took its primed rows
    prime, apply = DeferredWeightGradLinear.prime, emoe.router._DeferredLinear.apply
    monkeypatch.setattr(DeferredWeightGradLinear, "prime",
                        lambda self, xs: primed_rows.append(sum(len(x) for x in xs)) or prime(self, xs))
    monkeypatch.setattr(emoe.router._DeferredLinear, "apply",
                        lambda *a: used_primed.append(a[-1] is not None) or apply(*a))
    cfg = _window_cfg(1e-3)
    torch.manual_seed(0)
    ref_model = EMOE(cfg.model, fast_path=False).double()
    fast_model = copy.deepcopy(ref_model).set_fast_path(True)
    before = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
    split = random_split(cfg.model, 18, seed=3, dtype=np.float64)  # 5 batches: windows of 3 and 2
    ref_opt = reference_optimizer(ref_model, cfg)
    fast_opt = make_optimizer(fast_model, cfg)
    assert fast_opt.defaults["fused"] and not ref_opt.defaults["foreach"]
    ref_loss = reference_epoch(ref_model, split, cfg, ref_opt, generator=torch.Generator().manual_seed(4))
    out = train_epoch(fast_model, split, cfg, fast_opt, generator=torch.Generator().manual_seed(4),
                      device=torch.device("cpu"))
    assert out.error is None and out.steps == 2
    assert out.losses["loss"] == pytest.approx(ref_loss["loss"], rel=1e-5)
    assert fast_model.router.l1.pending == 0 and not fast_model.router.l1.deferred
    assert primed_rows == [12, 6] and used_primed == [True] * 5  # one product per window, all 5 batches
    fast_params = dict(fast_model.named_parameters())
    moved = 0
    for name, p in ref_model.named_parameters():
        torch.testing.assert_close(fast_params[name], p, rtol=0, atol=1e-7, msg=name)
        moved += int((p - before[name]).abs().max() > 1e-4)
    assert moved > 0.9 * len(before)  # two Adam steps of lr 1e-3 moved (almost) every tensor


def test_test_split_is_evaluated_only_on_epochs_that_improve_validation(monkeypatch):
    cfg = EMOEConfig(model=model_cfg(**NO_DROPOUT),
                     train=TrainConfig(lr=3e-3, batch_size=8, update_epochs=1, max_epochs=6, early_stop=6,
                                       device="cpu"))
    data = DataSet(random_split(cfg.model, 16, 1), random_split(cfg.model, 8, 2), random_split(cfg.model, 8, 3))
    calls: list[str] = []
    real = emoe.train.evaluate

    def counting(model, split, *args, **kwargs):
        calls.append("test" if split is data.test else "valid")
        return real(model, split, *args, **kwargs)

    monkeypatch.setattr(emoe.train, "evaluate", counting)
    torch.manual_seed(0)
    res = fit(EMOE(cfg.model), data, cfg)
    improved = [r.improved for r in res.history]
    assert calls.count("valid") == len(res.history) == 6
    assert calls.count("test") == sum(improved) and 0 < sum(improved) < 6


def test_deferred_router_gradient_under_bf16_autocast_matches_the_autograd_one():
    cfg = model_cfg(**NO_DROPOUT)
    torch.manual_seed(0)
    model = EMOE(cfg).train()
    x = tensors(random_split(cfg, 4, seed=5))
    grads = []
    for defer in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_deferred_grads(defer)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**x)
        assert out.pred.dtype == torch.bfloat16
        total_loss(out, torch.ones(4), emoe.config.LossConfig(), "sum").total.backward()
        model.set_deferred_grads(False)
        grads.append(model.router.l1.weight.grad.clone())
    assert grads[1].dtype == torch.float32
    torch.testing.assert_close(grads[1], grads[0], rtol=2e-2, atol=2e-3)
