"""Stacked seeds: K members trained as one batched model give exactly what each gives alone."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from emoe.checkpoint import Key, load_state, save_state
from emoe.config import ConfigError, EMOEConfig, LossConfig, ModelConfig, TrainConfig
from emoe.data.arrays import DataSet, Split
from emoe.stack import _Stack, check_stackable, fit_stacked
from emoe.stack import _train_epoch as _stack_epoch
from emoe.train import train_emoe

DIMS = {"d_text": 12, "d_audio": 5, "d_vision": 6, "len_text": 8, "len_audio": 8, "len_vision": 8}


def make_split(n: int, rng: np.random.Generator) -> Split:
    text = rng.normal(size=(n, 8, 12))
    audio = rng.normal(size=(n, 8, 5))
    vision = rng.normal(size=(n, 8, 6))
    labels = np.tanh(text[:, :, 0].mean(1) * 3 + vision[:, :, 0].mean(1)) * 3
    return Split(text=text, audio=audio, vision=vision, labels=labels, ids=np.array([f"s{i}" for i in range(n)]))


def make_data(seed: int = 0) -> DataSet:
    rng = np.random.default_rng(seed)
    return DataSet(make_split(40, rng), make_split(16, rng), make_split(12, rng), name="tiny")


def member(seed: int, distill: float, **train: object) -> EMOEConfig:
    model = ModelConfig(**DIMS, d_model=16, n_heads=2, n_levels=1, kernel_l=3, kernel_v=3, kernel_a=3,
                        router_input="flatten")
    base = {"lr": 3e-3, "batch_size": 8, "update_epochs": 2, "max_epochs": 4, "early_stop": 10, "device": "cpu",
            "seed": seed}
    return EMOEConfig(model=model, loss=LossConfig(distill_weight=distill),
                      train=TrainConfig(**{**base, **train}))  # type: ignore[arg-type]


def assert_same_run(stacked, alone, tol: float = 1e-6) -> None:
    assert stacked.status == alone.status and stacked.error == alone.error
    assert stacked.best_epoch == alone.best_epoch and stacked.epochs_run == alone.epochs_run
    for s, a in zip(stacked.history, alone.history):
        assert (s.epoch, s.improved, s.best_epoch, s.last) == (a.epoch, a.improved, a.best_epoch, a.last)
        assert s.lr == pytest.approx(a.lr, rel=1e-12)
        for part in ("train", "valid", "test", "router_mean"):
            got, want = getattr(s, part), getattr(a, part)
            assert (got is None) == (want is None), part
            if want is not None:
                assert got.keys() == want.keys()
                for key in want:
                    assert got[key] == pytest.approx(want[key], abs=tol, rel=tol), (s.epoch, part, key)
    assert (stacked.router is None) == (alone.router is None)
    if alone.router is not None:
        np.testing.assert_allclose(stacked.router.weights, alone.router.weights, atol=tol)
    assert (stacked.valid_router is None) == (alone.valid_router is None)  # predictions/ of the validation split
    if alone.valid_router is not None:
        np.testing.assert_allclose(stacked.valid_router.preds, alone.valid_router.preds, atol=tol)


def test_three_stacked_members_equal_their_runs_alone_in_float64(float64):
    data = make_data()
    cfgs = [member(1111, 0.1), member(1112, 0.5, lr=1e-3), member(1113, 0.0, grad_clip=0.5)]
    cfgs[2] = dataclasses.replace(cfgs[2], model=dataclasses.replace(cfgs[2].model, temperature=0.3,
                                                                     attn_dropout_v=0.2, text_dropout=0.1))
    seen: list[list[int]] = []
    stacked = fit_stacked(cfgs, data, on_stack_epoch=lambda results: seen.append([r.epochs_run for r in results]))
    alone = [train_emoe(cfg, data) for cfg in cfgs]
    for s, a in zip(stacked, alone):
        assert_same_run(s, a)
    assert seen == [[e] * 3 for e in range(1, 5)]  # once per epoch, after every member's epoch
    assert stacked[0].history[-1].valid != stacked[1].history[-1].valid  # the members really differ


def test_a_diverging_member_stops_and_the_others_go_on(float64):
    data = make_data()
    cfgs = [member(1, 0.1), member(2, 0.1, lr=1e6)]  # an absurd rate blows member 1 up
    stacked = fit_stacked(cfgs, data)
    alone = [train_emoe(cfg, data) for cfg in cfgs]
    assert stacked[1].status == "diverged" == alone[1].status
    assert stacked[0].status == "completed" and stacked[0].epochs_run == 4
    for s, a in zip(stacked, alone):
        assert_same_run(s, a)


def test_per_member_early_stop_callback_and_resume(float64, tmp_path):
    data = make_data()
    cfgs = [member(1, 0.1, max_epochs=5), member(2, 0.3, max_epochs=5, early_stop=1, min_delta=100.0)]
    full = fit_stacked(cfgs, data)
    assert full[1].epochs_run == 2 and full[0].epochs_run == 5  # member 1 ran out of patience

    def stop_after_2(k, record, checkpoint):
        if record.epoch == 2:
            save_state(checkpoint(), tmp_path / f"m{k}.pt")
            return True
        return None

    part = fit_stacked(cfgs, data, on_epoch=stop_after_2)
    assert [r.epochs_run for r in part] == [2, 2]
    states = [load_state(tmp_path / f"m{k}.pt") for k in range(2)]
    resumed = fit_stacked(cfgs, data, resume=states)
    for r, f in zip(resumed, full):
        assert_same_run(r, f, tol=1e-9)
    alone = train_emoe(cfgs[0], data, resume=states[0])  # a stacked member's state resumes alone too
    assert_same_run(alone, full[0])
    # a member checkpointed on another kind of device goes on, with a warning
    states = [load_state(tmp_path / f"m{k}.pt") for k in range(2)]  # a resume consumes its states (Adam's steps)
    states[1][Key.TORCH_RNG] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    with pytest.warns(RuntimeWarning, match="dropout generator was on another kind of device"):
        moved = fit_stacked(cfgs, data, resume=states)
    assert_same_run(moved[0], full[0], tol=1e-9)
    assert moved[1].status == "completed" and moved[1].epochs_run == full[1].epochs_run


def test_members_that_differ_in_shape_are_rejected_with_every_reason():
    a = member(1, 0.1)
    b = dataclasses.replace(a, model=dataclasses.replace(a.model, d_model=32), train=dataclasses.replace(
        a.train, batch_size=4))
    errors = check_stackable([a, b])
    assert any(e.startswith("model.d_model") for e in errors) and any(e.startswith("train.batch_size") for e in errors)
    with pytest.raises(ConfigError, match="d_model"):
        fit_stacked([a, b], make_data())


def test_stacked_windows_in_one_forward_train_as_batch_by_batch(float64, monkeypatch):
    """train.window_forward: each window's batches in one vmapped forward, each with its own loss and
    masks (a member with other dropout rates cuts its own); 45 rows in batches of 4, windows of 3: the
    last window has a batch of one row. Then the same with sites that do not stack: batch by batch."""
    rng = np.random.default_rng(1)
    data = DataSet(make_split(45, rng), make_split(16, rng), make_split(12, rng), name="tiny")

    def cfgs(window: bool) -> list[EMOEConfig]:
        out = [member(s, d, batch_size=4, update_epochs=3, max_epochs=3, window_forward=window)
               for s, d in ((1111, 0.1), (1112, 0.5))]
        other = dataclasses.replace(out[1].model, attn_dropout_v=0.2, text_dropout=0.1)
        return [out[0], dataclasses.replace(out[1], model=other)]

    batched = fit_stacked(cfgs(False), data)
    rows: list[int] = []
    forward = _Stack._member_loss
    monkeypatch.setattr(_Stack, "_member_loss", lambda self, *a: rows.append(a[2].shape[0]) or forward(self, *a))
    windowed = fit_stacked(cfgs(True), data)
    assert rows == [12, 12, 12, 9] * 3  # one forward per window, every member in it

    def same(got: list, want: list) -> None:
        for w, b in zip(got, want):
            assert_same_run(w, b)  # training losses are float32 means, summed in another order
            for rw, rb in zip(w.history, b.history):  # the rest is float64
                assert rw.valid == pytest.approx(rb.valid, rel=1e-10, abs=1e-12)

    same(windowed, batched)
    masks = _Stack._window_masks
    monkeypatch.setattr(_Stack, "_window_masks",  # a window never stacks: batch by batch (one batch does)
                        lambda self, n, size, *a: None if n > size else masks(self, n, size, *a))
    same(fit_stacked(cfgs(True), data), batched)


def test_after_a_step_no_gradient_stays_alive(float64):
    """zero_grad drops the stacked gradients and the member optimisers' views of them (one stacked
    gradient of memory, ~785 MB per member of the faithful router, was kept through the next window)."""
    data = make_data()
    stack = _Stack([member(1, 0.1), member(2, 0.3)], torch.device("cpu"))
    _stack_epoch(stack, data.train, stack.members[0].cfg)
    stack.optim.zero_grad()
    assert all(p.grad is None for p in stack.params.values())
    assert all(v.grad is None for o in stack.optim.optims for v in o.param_groups[0]["params"])


def test_a_checkpoint_taken_after_a_plateau_cut_holds_the_cut_rate_and_resumes_exactly(float64):
    data = make_data()
    cfgs = [member(1, 0.1, lr=0.1, plateau_patience=1, plateau_factor=0.5, max_epochs=6), member(2, 0.3)]
    full = train_emoe(cfgs[0], data)
    lrs = [r.lr for r in full.history]
    cut = next(e for e in range(1, len(lrs)) if lrs[e] < lrs[e - 1])  # epoch `cut` (from 1) cut the rate
    saved: dict[str, dict] = {}

    def keep(store: str):  # type: ignore[no-untyped-def]
        def on_epoch(*args):  # type: ignore[no-untyped-def]
            record, checkpoint = args[-2], args[-1]
            if record.epoch == cut and (len(args) == 2 or args[0] == 0):
                saved[store] = copy.deepcopy(checkpoint())
                return True
            return None
        return on_epoch

    fit_stacked(cfgs, data, on_epoch=keep("stacked"))
    train_emoe(cfgs[0], data, on_epoch=keep("alone"))
    lr = {k: s["optimizer"]["param_groups"][0]["lr"] for k, s in saved.items()}
    assert lr["stacked"] == lr["alone"] == lrs[cut]  # the rate the next epoch trains with
    assert_same_run(train_emoe(cfgs[0], data, resume=saved["stacked"]), full, tol=1e-9)


def test_members_that_all_diverge_in_one_window_stop_there_as_alone(float64):
    def run(cfgs: list[EMOEConfig]) -> list:
        data = make_data()

        def poison(*args):  # type: ignore[no-untyped-def]
            if args[-2].epoch == 1:
                data.train.text[...] = np.nan  # every member's next batch is bad
            return None
        return fit_stacked(cfgs, data, on_epoch=poison) if len(cfgs) > 1 else [train_emoe(cfgs[0], data,
                                                                                          on_epoch=poison)]

    cfgs = [member(1, 0.1), member(2, 0.3)]
    for s, a in zip(run(cfgs), [r for c in cfgs for r in run([c])]):
        assert (s.status, s.error, s.epochs_run) == (a.status, a.error, a.epochs_run) == (
            "diverged", "diverged: non-finite training loss (nan) at epoch 2, batch 1", 1)


def test_under_bf16_autocast_the_stacks_masks_take_the_dtypes_of_its_real_forward():
    """Meta tensors do not see autocast: the sites' dtypes come from a real forward, so bf16 activations
    are not multiplied by float32 masks (and upcast)."""
    cfgs = [member(1, 0.1, bf16=True, allow_cpu_bf16=True, max_epochs=1), member(2, 0.3, bf16=True,
                                                                                  allow_cpu_bf16=True, max_epochs=1)]
    stack = _Stack(cfgs, torch.device("cpu"))
    data = DataSet(*(dataclasses.replace(split, **{f: getattr(split, f).astype(np.float32)
                                                   for f in ("text", "audio", "vision", "labels")})
                     for split in (make_data().train, make_data().valid, make_data().test)), name="tiny")
    like = tuple(torch.from_numpy(np.stack([getattr(data.train, f)[:8]] * 2)) for f in ("text", "audio", "vision"))
    plans = stack._plans(8, like, cfgs[0])
    dtypes = [s.dtype for s in plans[0]]
    assert torch.bfloat16 in dtypes and torch.float32 in dtypes  # autocast: linear outputs bf16, norms float32
    assert [s.dtype for s in plans[1]] == dtypes
    results = fit_stacked(cfgs, data)
    assert all(r.status == "completed" and np.isfinite(r.valid["loss"]) for r in results)


def test_a_split_kept_on_the_device_gives_the_same_runs(float64, monkeypatch):
    """On an accelerator a split is copied there once and every batch (every member's, stacked) is cut
    there: the runs must be what the host gathering gives, to the bit. Tried on CPU by treating it as such
    a device."""
    import emoe.data.batches as batches

    data = make_data()
    cfgs = [member(1111, 0.1, max_epochs=2), member(1112, 0.5, max_epochs=2)]
    host_stacked, host_alone = fit_stacked(cfgs, data), train_emoe(cfgs[0], data)
    monkeypatch.setattr(batches, "keeps_on_device", lambda device: True)
    assert batches.resident_arrays(data.train, "cpu") is batches.resident_arrays(data.train, "cpu")  # copied once
    kept_stacked, kept_alone = fit_stacked(cfgs, data), train_emoe(cfgs[0], data)
    for s, a in [*zip(kept_stacked, host_stacked), (kept_alone, host_alone)]:
        assert_same_run(s, a, tol=0.0)
    monkeypatch.setattr(batches, "RESIDENT_BYTES", data.train.nbytes - 1)  # too large: gathered on the host
    assert batches.resident_arrays(data.train, "cpu") is None
    monkeypatch.setattr(batches, "RESIDENT_BYTES", 2**40)
    monkeypatch.setattr(batches, "device_memory", lambda device: 8 * data.train.nbytes - 8)  # a small GPU
    assert batches.resident_arrays(data.valid, "cpu") is not None and batches.resident_arrays(data.train, "cpu") is None


def test_a_read_only_split_is_kept_on_the_device_without_a_warning(tmp_path):
    """Trials read the data through Ray's shared, read-only views; copying them to the device once must not
    print torch's non-writable-array warning into every trial's log (a fresh process: torch warns once)."""
    import subprocess
    import sys

    code = """
import warnings
import numpy as np
import emoe.data.batches as batches
from emoe.data.arrays import Split
from emoe.data.batches import iter_batches
warnings.simplefilter("error")
batches.keeps_on_device = lambda device: True
data = [np.zeros(shape, dtype=np.float32) for shape in ((6, 4, 3), (6, 4, 2), (6, 4, 2), (6,))]
for a in data:
    a.setflags(write=False)
split = Split(text=data[0], audio=data[1], vision=data[2], labels=data[3])
assert batches.resident_arrays(split, "cpu") is not None
assert sum(len(b.labels) for b in iter_batches(split, 4)) == 6
"""
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("window_forward", [False, True])
def test_stacked_graphs_replay_the_eager_stack(float64, monkeypatch, window_forward):
    """train.compile: graphs on a stack: each window's (or batch's) vmapped forward and backward replayed, the
    stacked parameters read in place and given gradients of their own (batch by batch, a replayed backward
    hands autograd the same buffers each time). A CPU stand-in for make_graphed_callables keeps that
    contract (tests/emoe/test_capture.py); a member that diverges leaves, and the rest are captured anew."""
    import emoe.stack
    from tests.emoe.test_capture import _static_buffer_graphs

    captures: list[int] = []

    def graphs_of(body, sample, **kwargs):
        captures.append(sample[0].shape[0])  # members in the stack
        return _static_buffer_graphs(body, sample, **kwargs)

    monkeypatch.setattr(emoe.stack, "effective_mode", lambda requested, device: requested)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", graphs_of)
    data = make_data()
    cfgs = [member(1111, 0.1, window_forward=window_forward), member(1112, 0.5, lr=1e-3, window_forward=window_forward),
            member(1113, 0.1, lr=1e6, window_forward=window_forward)]  # the third diverges
    eager = fit_stacked(cfgs, data)
    graphs = fit_stacked([dataclasses.replace(c, train=dataclasses.replace(c.train, compile="graphs")) for c in cfgs],
                         data)
    assert [r.status for r in graphs] == ["completed", "completed", "diverged"]
    assert captures[0] == 3 and captures[-1] == 2  # captured for the stack, again once a member had left
    for g, e in zip(graphs, eager):
        assert_same_run(g, e, tol=1e-9)


def test_a_stacked_capture_that_fails_runs_eagerly_with_one_warning(float64, monkeypatch):
    import emoe.stack

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(emoe.stack, "effective_mode", lambda requested, device: requested)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", broken)
    data, cfgs = make_data(), [member(1, 0.1, max_epochs=2), member(2, 0.3, max_epochs=2)]
    eager = fit_stacked(cfgs, data)
    with pytest.warns(RuntimeWarning, match="capturing the stacked training step failed") as record:
        graphs = fit_stacked([dataclasses.replace(c, train=dataclasses.replace(c.train, compile="graphs"))
                              for c in cfgs], data)
    assert len([w for w in record if "capturing" in str(w.message)]) == 1
    for g, e in zip(graphs, eager):
        assert_same_run(g, e, tol=0.0)
