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
