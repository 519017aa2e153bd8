"""Captured steps: train.compile off | default | graphs."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import emoe.capture
from emoe.capture import effective_mode
from emoe.config import ConfigError, TrainConfig
from emoe.train import train_emoe

from .test_train import make_cfg, make_data


def with_compile(cfg, mode: str):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=mode))


def test_compile_mode_is_validated():
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile="max")


def test_graphs_on_cpu_falls_back_to_eager_with_one_warning(monkeypatch):
    monkeypatch.setattr(emoe.capture, "_warned", set())
    with pytest.warns(RuntimeWarning, match="graphs.*needs a CUDA device") as record:
        assert effective_mode("graphs", torch.device("cpu")) == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_mode("graphs", torch.device("cpu")) == "off"  # warned once only
    assert len(record) == 1
    cfg = make_cfg(max_epochs=2)
    eager = train_emoe(cfg, make_data())
    fallback = train_emoe(with_compile(cfg, "graphs"), make_data())
    assert [r.valid for r in fallback.history] == [r.valid for r in eager.history]


@pytest.mark.slow
def test_compile_default_equals_eager_on_cpu():
    cfg = make_cfg(max_epochs=2)
    eager = train_emoe(cfg, make_data())
    compiled = train_emoe(with_compile(cfg, "default"), make_data())
    for a, b in zip(eager.history, compiled.history):
        for key, value in a.valid.items():
            assert b.valid[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        assert b.train["loss"] == pytest.approx(a.train["loss"], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphs_equal_eager_on_cuda():
    cfg = make_cfg(max_epochs=2, device="cuda")
    eager = train_emoe(cfg, make_data())
    graphs = train_emoe(with_compile(cfg, "graphs"), make_data())
    for a, b in zip(eager.history, graphs.history):
        assert b.train["loss"] == pytest.approx(a.train["loss"], rel=1e-5)
        for key, value in a.valid.items():
            assert b.valid[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def _static_buffer_graphs(body, sample, allow_unused_input=False):
    """A stand-in for ``torch.cuda.make_graphed_callables`` on CPU that keeps its contract where it matters:
    the backward hands autograd the same static gradient buffers at every call (as a replayed graph does),
    and the parameters must keep the storage they had at capture (a graph reads those addresses). ``body``:
    a module (its parameters are the graph's too) or a function (parameters among its inputs)."""
    module = isinstance(body, torch.nn.Module)
    call, n = (body.forward if module else body), len(sample)
    params = [p for p in body.parameters() if p.requires_grad] if module else []

    def read(inputs):  # what the graph reads in place
        return list(body.parameters()) if module else [t for t in inputs[:n] if t.requires_grad]

    captured = [t.data_ptr() for t in read(sample)]
    static: dict[int, torch.Tensor] = {}

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            assert [t.data_ptr() for t in read(inputs)] == captured, \
                "a parameter's storage was replaced after capture: a replayed graph would read the old one"
            with torch.enable_grad():
                total, vals = call(*inputs[:n])
            ctx.total, ctx.inputs = total, inputs
            return total.detach(), vals

        @staticmethod
        def backward(ctx, grad_total, _grad_vals):
            wanted = [i for i, t in enumerate(ctx.inputs) if t.requires_grad]
            grads = torch.autograd.grad(ctx.total, [ctx.inputs[i] for i in wanted], grad_total,
                                        allow_unused=allow_unused_input)
            out = [None] * len(ctx.inputs)
            for i, grad in zip(wanted, grads):
                if grad is not None:
                    buffer = static.setdefault(i, torch.zeros_like(grad))
                    buffer.copy_(grad)
                    out[i] = buffer.detach()
            return tuple(out)

    return lambda *args: Replay.apply(*args, *params)


@pytest.mark.parametrize("window_forward", [False, True])
def test_graphs_replay_equals_eager_from_static_gradient_buffers(monkeypatch, window_forward):
    """A replayed backward writes its gradients into the same buffers every time. Batch by batch, the step
    must add each batch's into gradients of the parameters' own (adopting the buffer would double or lose
    batches of a window); a whole window is one replay (its batches' own losses and masks as eager)."""
    monkeypatch.setattr(emoe.capture, "effective_mode", lambda requested, device: requested)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", _static_buffer_graphs)
    cfg = make_cfg(max_epochs=2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, window_forward=window_forward))
    assert cfg.train.update_epochs > 1
    kinds, steps = set(), []
    original = emoe.capture.TrainStep._replay

    def replay(self, kind, *args):
        kinds.add(kind)
        steps.append(self)
        return original(self, kind, *args)

    monkeypatch.setattr(emoe.capture.TrainStep, "_replay", replay)
    eager = train_emoe(with_compile(cfg, "default"), make_data())
    graphs = train_emoe(with_compile(cfg, "graphs"), make_data())
    assert kinds == {"window" if window_forward else "batch"}
    assert steps and not steps[-1]._graphs  # released when the run ended
    for a, b in zip(eager.history, graphs.history):
        assert b.train["loss"] == pytest.approx(a.train["loss"], rel=1e-5)
        for key, value in a.valid.items():
            assert b.valid[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_capture_that_fails_runs_the_step_eagerly_with_one_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(emoe.capture, "effective_mode", lambda requested, device: requested)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", broken)
    cfg = make_cfg(max_epochs=1)
    eager = train_emoe(with_compile(cfg, "default"), make_data())
    with pytest.warns(RuntimeWarning, match="capturing the training step failed.*not permitted") as record:
        fallback = train_emoe(with_compile(cfg, "graphs"), make_data())
    assert len([w for w in record if "capturing" in str(w.message)]) == 1
    assert fallback.history[0].train["loss"] == pytest.approx(eager.history[0].train["loss"], rel=1e-5)


def test_bf16_graphs_replay_the_bf16_eager_window(monkeypatch):
    """bf16 + graphs (1.42x float32 graphs on the H200): bf16 working weights, their gradients moved to the
    float32 masters and cleared every window, the weights refreshed in place after each step; the replayed
    window must train as the eager one does (same operations: equal up to bf16 rounding of the order)."""
    monkeypatch.setattr(emoe.capture, "effective_mode", lambda requested, device: requested)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", _static_buffer_graphs)
    cfg = make_cfg(max_epochs=2, bf16=True, allow_cpu_bf16=True)
    eager = train_emoe(cfg, make_data())
    graphs = train_emoe(with_compile(cfg, "graphs"), make_data())
    for a, b in zip(eager.history, graphs.history):
        assert b.train["loss"] == pytest.approx(a.train["loss"], rel=1e-3)
        for key in ("mae", "loss"):
            assert b.valid[key] == pytest.approx(a.valid[key], rel=1e-3), key
    assert graphs.history[-1].train["loss"] != eager.history[0].train["loss"]  # it trained
