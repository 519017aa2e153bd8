"""An accumulation window in one forward (``train.window_forward``) trains exactly as batch by batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emoe import capture
from emoe.capture import TrainStep
from emoe.config import EMOEConfig, LossConfig, ModelConfig, TrainConfig
from emoe.data.arrays import DataSet, Split
from emoe.model import EMOE
from emoe.train import fit, seed_everything

DIMS = {"d_text": 12, "d_audio": 5, "d_vision": 6, "len_text": 8, "len_audio": 8, "len_vision": 8}


def make_split(n: int, rng: np.random.Generator, classes: bool = False, dtype: type = np.float64) -> Split:
    text, audio, vision = (rng.normal(size=(n, 8, d)).astype(dtype) for d in (12, 5, 6))
    score = np.tanh(text[:, :, 0].mean(1) * 3 + vision[:, :, 0].mean(1)) * 3
    labels = ((score > -1).astype(np.int64) + (score > 1)) if classes else score
    return Split(text=text, audio=audio, vision=vision, labels=labels, ids=np.array([f"s{i}" for i in range(n)]))


def make_data(n_train: int, classes: bool = False, dtype: type = np.float64) -> DataSet:
    rng = np.random.default_rng(0)
    return DataSet(*(make_split(n, rng, classes, dtype) for n in (n_train, 16, 12)), name="tiny",
                   label_kind="classification" if classes else "mosi")


def make_cfg(window: bool, classes: bool = False, **train: object) -> EMOEConfig:
    model = ModelConfig(**DIMS, d_model=16, n_heads=2, n_levels=1, kernel_l=3, kernel_v=3, kernel_a=3,
                        n_outputs=3 if classes else 1)
    base = {"lr": 3e-3, "batch_size": 4, "update_epochs": 3, "max_epochs": 3, "early_stop": 10, "device": "cpu",
            "window_forward": window}
    loss = LossConfig(task="classification") if classes else LossConfig()
    return EMOEConfig(model=model, loss=loss, train=TrainConfig(**{**base, **train}))  # type: ignore[arg-type]


def run(cfg: EMOEConfig, data: DataSet, **kwargs: object):  # type: ignore[no-untyped-def]
    seed_everything(cfg.train.seed)
    model = EMOE(cfg.model)
    return model, fit(model, data, cfg, **kwargs)  # type: ignore[arg-type]


def assert_same_training(a, b, tol: float = 1e-10) -> None:  # type: ignore[no-untyped-def]
    (model_a, res_a), (model_b, res_b) = a, b
    assert (res_a.status, res_a.error, res_a.best_epoch) == (res_b.status, res_b.error, res_b.best_epoch)
    assert len(res_a.history) == len(res_b.history)
    for ra, rb in zip(res_a.history, res_b.history):
        # the epoch's training losses are float32 means (summed in another order); the rest is float64
        for part, rel in (("train", 1e-6), ("valid", tol)):
            got, want = getattr(ra, part), getattr(rb, part)
            assert got.keys() == want.keys()
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=rel, abs=rel), (ra.epoch, part, key)
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=tol, atol=tol, msg=name)


# 45 rows in batches of 4, windows of 3: 3 full windows, then 2 full batches and one of a single row
@pytest.mark.parametrize("classes", [False, True])
def test_one_forward_per_window_trains_as_batch_by_batch_in_float64(float64, classes):
    data = make_data(45, classes)
    windowed, batched = run(make_cfg(True, classes), data), run(make_cfg(False, classes), data)
    assert_same_training(windowed, batched)
    assert batched[1].history[-1].train != run(make_cfg(False, classes, seed=7), data)[1].history[-1].train


def test_a_window_is_one_training_forward(monkeypatch):
    calls: list[int] = []
    forward = EMOE.forward

    def counting(self, **kwargs):  # type: ignore[no-untyped-def]
        if torch.is_grad_enabled() and self.training:  # not the dropout plans' recordings, not evaluation
            calls.append(kwargs["text"].shape[0])
        return forward(self, **kwargs)

    monkeypatch.setattr(EMOE, "forward", counting)
    run(make_cfg(True, max_epochs=2), make_data(45, dtype=np.float32))
    assert calls == [12, 12, 12, 9] * 2  # rows per training forward: the windows, not the batches of 4
    calls.clear()
    run(make_cfg(False, max_epochs=1), make_data(45, dtype=np.float32))
    assert calls == [4] * 11 + [1]


def test_windows_whose_dropout_sites_do_not_stack_run_per_batch_with_the_same_result(float64, monkeypatch):
    data = make_data(45)
    masks = TrainStep._window_masks
    monkeypatch.setattr(TrainStep, "_window_masks",  # a window never joins: batch by batch (one batch does)
                        lambda self, batch, size: None if len(batch.labels) > size else masks(self, batch, size))
    assert_same_training(run(make_cfg(True), data), run(make_cfg(False), data))


def test_a_non_finite_batch_inside_a_window_is_named_as_batch_by_batch():
    def poisoned(window: bool):  # type: ignore[no-untyped-def]
        data = make_data(45, dtype=np.float32)

        def poison(record, checkpoint):  # type: ignore[no-untyped-def]
            if record.epoch == 1:
                data.train.text[17] = np.nan  # one row: one batch of the epoch's order
        return run(make_cfg(window), data, on_epoch=poison)[1]

    windowed, batched = poisoned(True), poisoned(False)
    assert batched.status == "diverged" and batched.error.startswith("diverged: non-finite training loss")
    assert not batched.error.endswith("batch 1")  # the bad batch is not the window's first
    assert windowed.error == batched.error and windowed.epochs_run == batched.epochs_run == 1


def test_bf16_autocast_windows_match_batch_by_batch_closely():
    data = make_data(45, dtype=np.float32)
    cfg = dataclasses.replace(make_cfg(True), train=dataclasses.replace(make_cfg(True).train, bf16=True,
                                                                        allow_cpu_bf16=True, max_epochs=1))
    off = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, window_forward=False))
    (_, a), (_, b) = run(cfg, data), run(off, data)
    assert a.history[0].train["loss"] == pytest.approx(b.history[0].train["loss"], rel=2e-2)


def test_on_cpu_a_window_of_large_activations_runs_batch_by_batch(monkeypatch):
    """A window whose largest activation exceeds CPU_FORWARD_BYTES (page-faulted in afresh each time on
    CPU) trains batch by batch there, with the router's deferred gradient; on an accelerator, in one."""
    cfg = make_cfg(True)
    window = 4 * 4 * 8 * 4 * 16 * 3  # float bytes x batch 4 x length 8 x feed-forward width 4 x d_model 16 x 3
    assert capture.batches_per_forward(cfg, torch.device("cpu")) == 3
    monkeypatch.setattr(capture, "CPU_FORWARD_BYTES", window)
    assert capture.batches_per_forward(cfg, torch.device("cpu")) == 3
    assert capture.batches_per_forward(cfg, torch.device("cpu"), members=2) == 1
    monkeypatch.setattr(capture, "CPU_FORWARD_BYTES", window - 1)
    assert capture.batches_per_forward(cfg, torch.device("cpu")) == 1
    assert capture.batches_per_forward(cfg, torch.device("cuda")) == 3  # the caching allocator reuses memory
    calls: list[int] = []
    forward = EMOE.forward
    monkeypatch.setattr(EMOE, "forward", lambda self, **kw: (calls.append(kw["text"].shape[0])
                                                             if torch.is_grad_enabled() and self.training else None)
                        or forward(self, **kw))
    run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=1)), make_data(45, dtype=np.float32))
    assert calls == [4] * 11 + [1]
