"""bf16 training: bf16 working weights refreshed once per step, float32 masters updated by the optimiser."""

from __future__ import annotations

import math

import torch

from emoe.losses import total_loss
from emoe.model import EMOE
from emoe.precision import BF16Weights
from emoe.train import fit, seed_everything, train_emoe

from .test_train import make_cfg, make_data


def test_bf16_weights_keep_float32_masters_and_refresh_once_per_step():
    cfg = make_cfg(dropout=False)
    seed_everything(0)
    model = EMOE(cfg.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shadow = BF16Weights(model)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(m.dtype == torch.float32 for m in shadow.masters)
    opt = torch.optim.Adam(shadow.masters, lr=1e-2)
    x = make_data().train
    out = model(text=torch.from_numpy(x.text[:4]).bfloat16(), audio=torch.from_numpy(x.audio[:4]).bfloat16(),
                vision=torch.from_numpy(x.vision[:4]).bfloat16())
    total_loss(out, torch.from_numpy(x.labels[:4]), cfg.loss, "sum").total.backward()
    shadow.grads_to_master()
    assert all(p.grad is None for p in model.parameters())
    assert all(m.grad is not None and m.grad.dtype == torch.float32 for m in shadow.masters)
    opt.step()
    shadow.refresh()
    for (name, p), m in zip(((n, p) for n, p in model.named_parameters() if n in shadow.names), shadow.masters):
        assert not torch.equal(m, before[name])  # the float32 master moved
        assert torch.equal(p, m.to(torch.bfloat16))  # and the working copy holds it, rounded once
    assert shadow.state_dict()[shadow.names[0]].dtype == torch.float32


def test_bf16_training_is_close_to_float32_and_returns_float32_weights():
    data = make_data()
    full = train_emoe(make_cfg(max_epochs=3), data)
    half_cfg = make_cfg(max_epochs=3, bf16=True, allow_cpu_bf16=True)
    states = []
    seed_everything(half_cfg.train.seed)
    model = EMOE(half_cfg.model)
    half = fit(model, data, half_cfg, on_epoch=lambda r, ckpt: states.append(ckpt()["model"]) and None)
    assert half.status == "completed" and math.isfinite(half.valid["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the masters, given back
    assert all(t.dtype == torch.float32 for t in states[-1].values() if t.is_floating_point())
    for a, b in zip(full.history, half.history):  # same seed, data and masks: close, not bit-equal
        assert abs(a.valid["loss"] - b.valid["loss"]) < 0.05 * a.valid["loss"]
