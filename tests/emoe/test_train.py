"""Tests of emoe.train: accumulation windows, selection, early stop, plateau LR, divergence, resume."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from emoe.checkpoint import load_state, save_state
from emoe.config import ConfigError, EMOEConfig, LossConfig, ModelConfig, TrainConfig
from emoe.data.arrays import DataSet, Split
from emoe.data.batches import iter_batches
from emoe.evaluate import autocast_context, evaluate
from emoe.losses import total_loss
from emoe.model import EMOE
from emoe.outputs import EpochRecord
from emoe.train import check_data_fits, fit, seed_everything, train_emoe, train_epoch

DIMS = {"d_text": 12, "d_audio": 5, "d_vision": 6, "len_text": 8, "len_audio": 8, "len_vision": 8}
NO_DROPOUT = {name: 0.0 for name in ("text_dropout", "embed_dropout", "attn_dropout_l", "attn_dropout_v",
                                     "attn_dropout_a", "relu_dropout", "res_dropout", "out_dropout")}


def make_split(n: int, rng: np.random.Generator, n_classes: int = 0) -> Split:
    text = rng.normal(size=(n, 8, 12)).astype(np.float32)
    audio = rng.normal(size=(n, 8, 5)).astype(np.float32)
    vision = rng.normal(size=(n, 8, 6)).astype(np.float32)
    score = np.tanh(text[:, :, 0].mean(1) * 3 + vision[:, :, 0].mean(1)) * 3  # learnable from the inputs
    labels = ((score > -1).astype(np.int64) + (score > 1)) if n_classes else score.astype(np.float32)
    return Split(text=text, audio=audio, vision=vision, labels=labels,
                 ids=np.array([f"s{i}" for i in range(n)]), reliability=rng.random((n, 3), dtype=np.float32))


def make_data(seed: int = 0, n_train: int = 48, classification: bool = False) -> DataSet:
    rng = np.random.default_rng(seed)
    k = 3 if classification else 0
    return DataSet(make_split(n_train, rng, k), make_split(24, rng, k), make_split(20, rng, k), name="tiny",
                   label_kind="classification" if classification else "mosi")


def make_cfg(dropout: bool = True, **train: object) -> EMOEConfig:
    model = ModelConfig(**DIMS, d_model=16, n_heads=2, n_levels=1, kernel_l=3, kernel_v=3, kernel_a=3,
                        **({} if dropout else NO_DROPOUT))
    base = {"lr": 1e-3, "batch_size": 8, "update_epochs": 2, "max_epochs": 4, "early_stop": 10, "device": "cpu"}
    return EMOEConfig(model=model, train=TrainConfig(**{**base, **train}))  # type: ignore[arg-type]


def collect(records: list[EpochRecord]):
    def on_epoch(record: EpochRecord, checkpoint):
        records.append(record)
    return on_epoch


class CountingModel(torch.nn.Module):
    """Wraps EMOE and counts forward calls, so the optimiser can see which batch it steps after."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, **kwargs):
        self.calls += 1
        return self.inner(**kwargs)


class RecordingAdam(torch.optim.Adam):
    """Adam that records after which batch it zeroes and steps, and the gradients at its first step."""

    def __init__(self, model: CountingModel):
        super().__init__(model.parameters(), lr=1e-3)
        self.model, self.zeros, self.steps, self.first_grads, self.norms = model, [], [], None, []

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.zeros.append(self.model.calls)
        super().zero_grad(set_to_none)

    def step(self, closure=None):  # type: ignore[override]
        self.steps.append(self.model.calls)
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.model.parameters()
                                                                      if p.grad is not None]))))
        if self.first_grads is None:
            self.first_grads = [p.grad.clone() for p in self.model.parameters()]
        return super().step(closure)


def test_accumulation_window_zeroes_at_start_steps_at_end_and_after_partial_window():
    data, cfg = make_data(n_train=45), make_cfg(dropout=False, batch_size=4, update_epochs=5)
    torch.manual_seed(0)
    model = CountingModel(EMOE(cfg.model))
    initial = copy.deepcopy(model.inner)
    opt = RecordingAdam(model)
    gen = torch.Generator().manual_seed(7)
    out = train_epoch(model, data.train, cfg, opt, generator=gen, device=torch.device("cpu"))
    # 45 samples in batches of 4 -> 12 batches; windows of 5 -> zero before batches 1, 6, 11, step after 5, 10, 12
    assert out.error is None and out.steps == 3
    assert opt.zeros == [0, 5, 10]
    assert opt.steps == [5, 10, 12]
    # the first step's gradient is the SUM (not the mean) of the first five batches' gradients
    replay = iter_batches(data.train, 4, generator=torch.Generator().manual_seed(7), shuffle=True)
    summed = [torch.zeros_like(p) for p in initial.parameters()]
    for _, batch in zip(range(5), replay):
        initial.zero_grad()
        total_loss(initial(text=batch.text, audio=batch.audio, vision=batch.vision), batch.labels, cfg.loss,
                   "sum").total.backward()
        summed = [s + p.grad for s, p in zip(summed, initial.parameters())]
    for got, want in zip(opt.first_grads, summed):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_grad_clip_bounds_the_global_norm_at_every_step():
    data = make_data(n_train=45)
    for clip, bounded in ((None, False), (1e-3, True)):
        cfg = make_cfg(dropout=False, batch_size=4, update_epochs=5, grad_clip=clip)
        torch.manual_seed(0)
        model = CountingModel(EMOE(cfg.model))
        opt = RecordingAdam(model)
        train_epoch(model, data.train, cfg, opt, generator=torch.Generator().manual_seed(7),
                    device=torch.device("cpu"))
        assert len(opt.norms) == 3
        assert all(n <= 1e-3 * (1 + 1e-4) for n in opt.norms) == bounded


def test_callback_sees_every_epoch_and_test_metrics_only_when_validation_improves():
    records: list[EpochRecord] = []
    res = train_emoe(make_cfg(max_epochs=6), make_data(), on_epoch=collect(records))
    assert res.status == "completed" and res.epochs_run == 6 == len(res.history)
    assert [r.epoch for r in records] == list(range(1, 7))
    best = math.inf
    for r in records:  # improvement = at least min_delta below the best validation loss so far
        assert r.improved == (r.valid["loss"] <= best - 1e-6)
        best = min(best, r.valid["loss"]) if r.improved else best
        assert (r.test is not None) == r.improved
        assert set(r.train) == {"loss", "task", "uni", "sim", "ent", "ud"}
        assert abs(sum(r.router_mean.values()) - 1) < 1e-5
    valid_losses = [r.valid["loss"] for r in records]
    assert res.best_epoch == 1 + int(np.argmin(valid_losses))  # selected on validation only
    assert res.valid == records[res.best_epoch - 1].valid
    assert res.test == records[res.best_epoch - 1].test
    assert res.router is not None and res.router.weights.shape == (20, 3)
    assert res.router.ids is not None and res.router.reliability is not None
    # the router record is the selected epoch's: its predictions give the reported test loss
    assert abs(np.abs(res.router.preds - res.router.labels).mean() - res.test["loss"]) < 1e-5


def test_early_stop_after_epochs_without_improvement():
    records: list[EpochRecord] = []
    # min_delta so large that only the first epoch (best = inf before it) counts as an improvement
    cfg = make_cfg(max_epochs=20, early_stop=3, min_delta=100.0)
    res = train_emoe(cfg, make_data(), on_epoch=collect(records))
    assert res.epochs_run == 4 and res.best_epoch == 1
    assert [r.improved for r in records] == [True, False, False, False]
    assert [r.test is not None for r in records] == [True, False, False, False]
    assert res.test == records[0].test
    assert [r.last for r in records] == [False, False, False, True]  # early stop flagged on its epoch


def test_last_epoch_is_flagged_when_the_budget_is_spent_and_not_when_the_callback_stops():
    records: list[EpochRecord] = []
    res = train_emoe(make_cfg(max_epochs=3), make_data(), on_epoch=collect(records))
    assert res.epochs_run == 3 and [r.last for r in records] == [False, False, True]
    stopped: list[EpochRecord] = []
    res = train_emoe(make_cfg(max_epochs=3), make_data(),
                     on_epoch=lambda record, _: stopped.append(record) or record.epoch == 2)
    assert res.epochs_run == 2 and [r.last for r in stopped] == [False, False]


def test_plateau_scheduler_halves_lr_after_patience():
    # lr so small that the validation loss cannot improve by the scheduler's relative threshold (1e-4);
    # still above its eps (1e-8), below which torch ignores a reduction
    cfg = make_cfg(lr=1e-7, max_epochs=6, plateau_patience=1, plateau_factor=0.5)
    res = train_emoe(cfg, make_data())
    lrs = [r.lr for r in res.history]
    assert lrs == pytest.approx([1e-7, 1e-7, 1e-7, 5e-8, 5e-8, 2.5e-8], rel=1e-9)
    assert res.extra["final_lr"] == pytest.approx(2.5e-8)


# an infinite label also ends as "nan": its importance target is 0/0
@pytest.mark.parametrize(("column", "value"), [("text", np.nan), ("labels", np.inf)])
def test_non_finite_loss_diverges_keeping_last_good_selection(column, value):
    data = make_data()
    records: list[EpochRecord] = []

    def poison_after_epoch_2(record, checkpoint):
        records.append(record)
        if record.epoch == 2:
            getattr(data.train, column)[...] = value  # the test owns these arrays

    seed_everything(0)
    model = EMOE(make_cfg().model)
    res = fit(model, data, make_cfg(max_epochs=5), on_epoch=poison_after_epoch_2)
    assert res.status == "diverged"
    assert res.error == "diverged: non-finite training loss (nan) at epoch 3, batch 1"
    assert res.epochs_run == 2 and len(res.history) == 2
    assert 1 <= res.best_epoch <= 2
    assert res.valid == records[res.best_epoch - 1].valid and res.test == records[res.best_epoch - 1].test
    assert res.router is not None
    # the optimiser never stepped with the poisoned gradients
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_validation_predictions_diverge():
    data = make_data()

    def poison_valid(record, checkpoint):
        data.valid.text[0] = np.nan

    res = train_emoe(make_cfg(max_epochs=4), data, on_epoch=poison_valid)
    assert res.status == "diverged" and res.epochs_run == 1 and res.best_epoch == 1
    assert res.error is not None and res.error.startswith("diverged: non-finite validation predictions at epoch 2")


def test_same_seed_same_metrics_and_other_seed_differs():
    a = train_emoe(make_cfg(max_epochs=3), make_data())
    b = train_emoe(make_cfg(max_epochs=3), make_data())
    c = train_emoe(make_cfg(max_epochs=3, seed=2), make_data())
    assert [r.valid for r in a.history] == [r.valid for r in b.history]
    assert [r.train for r in a.history] == [r.train for r in b.history]
    assert a.test == b.test and np.array_equal(a.router.weights, b.router.weights)
    assert [r.train for r in a.history] != [r.train for r in c.history]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    cfg, path = make_cfg(max_epochs=6, plateau_patience=1), tmp_path / "state.pt"
    full = train_emoe(cfg, make_data())

    def stop_after_3(record, checkpoint):
        if record.epoch == 3:
            save_state(checkpoint(), path)
            return True
        return None

    part = train_emoe(cfg, make_data(), on_epoch=stop_after_3)
    assert part.status == "completed" and part.epochs_run == 3 and part.extra["stopped_by_callback"]
    state = load_state(path)
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed away
    seed_everything(999)  # a different initialisation and RNG stream: everything must come from the state
    resumed = fit(EMOE(cfg.model), make_data(), cfg, resume=state)
    assert resumed.epochs_run == 6 and [r.epoch for r in resumed.history] == list(range(1, 7))
    assert [r.valid for r in resumed.history] == [r.valid for r in full.history]
    assert [r.lr for r in resumed.history] == [r.lr for r in full.history]
    assert resumed.best_epoch == full.best_epoch and resumed.test == full.test
    assert np.array_equal(resumed.router.weights, full.router.weights)
    # a changed configuration cannot continue from the state
    other = dataclasses.replace(cfg, loss=LossConfig(distill_weight=0.5))
    with pytest.raises(ValueError, match=r"loss.distill_weight: saved 0.1, now 0.5"):
        fit(EMOE(cfg.model), make_data(), other, resume=state)


def test_load_state_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_state(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_state(bad)
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_state(tmp_path / "partial.pt")


def test_train_emoe_names_every_field_that_disagrees_with_the_data():
    cfg = EMOEConfig(model=ModelConfig(**{**DIMS, "d_audio": 74, "len_vision": 500}))
    with pytest.raises(ConfigError) as err:
        train_emoe(cfg, make_data())
    assert any(e.startswith("model.d_audio: the configuration says 74, the data have 5") for e in err.value.errors)
    assert any(e.startswith("model.len_vision") for e in err.value.errors)
    with pytest.raises(ConfigError, match=r"loss\.task"):
        check_data_fits(make_cfg(), make_data(classification=True))


def test_classification_trains_with_cross_entropy_selection():
    base = make_cfg(max_epochs=2)
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, n_outputs=3),
                              loss=LossConfig(task="classification"))
    res = train_emoe(cfg, make_data(classification=True))
    assert res.status == "completed"
    assert {"loss", "acc", "f1_macro"} <= set(res.test)
    assert set(np.unique(res.router.preds)) <= {0.0, 1.0, 2.0}


def test_evaluate_restores_mode_and_reports_l1_loss():
    cfg, data = make_cfg(), make_data()
    model = EMOE(cfg.model).train()
    metrics, rec = evaluate(model, data.valid, cfg, "mosi", "cpu")
    assert model.training
    assert metrics["loss"] == pytest.approx(float(np.abs(rec.preds - data.valid.labels).mean()), rel=1e-5)
    assert metrics["mae"] == pytest.approx(metrics["loss"], rel=1e-5)
    np.testing.assert_allclose(rec.weights.sum(1), 1, atol=1e-5)


def test_bf16_autocast_only_where_allowed():
    cpu = torch.device("cpu")
    assert not isinstance(autocast_context(make_cfg(bf16=True), cpu), torch.autocast)
    assert isinstance(autocast_context(make_cfg(bf16=True, allow_cpu_bf16=True), cpu), torch.autocast)
    res = train_emoe(make_cfg(max_epochs=1, bf16=True, allow_cpu_bf16=True), make_data())
    assert res.status == "completed" and math.isfinite(res.valid["loss"])


def test_the_selected_epoch_keeps_per_sample_validation_predictions_too():
    data = make_data()
    res = train_emoe(make_cfg(max_epochs=3), data)
    v, t = res.valid_router, res.router
    assert v is not None and t is not None
    assert np.array_equal(v.labels, data.valid.labels) and list(v.ids) == list(data.valid.ids)
    assert math.isclose(float(np.abs(v.preds - v.labels).mean()), res.valid["mae"], rel_tol=1e-5)
    assert math.isclose(float(np.abs(t.preds - t.labels).mean()), res.test["mae"], rel_tol=1e-5)


def test_a_checkpoint_from_another_kind_of_device_resumes_with_a_warning(tmp_path):
    """A resume may change train.device, but a CUDA generator's state (16 bytes) does not fit the CPU's
    generator (5056 bytes): set_state raised, and the trial failed again at every retry. The run goes on
    with a dropout stream seeded from its seed and epoch, and says so."""
    from emoe.checkpoint import Key

    cfg, path = make_cfg(max_epochs=4), tmp_path / "state.pt"

    def stop_after_2(record, checkpoint):
        if record.epoch == 2:
            save_state(checkpoint(), path)
            return True
        return None

    train_emoe(cfg, make_data(), on_epoch=stop_after_2)

    def moved() -> dict:
        state = load_state(path)  # a resume consumes its state (Adam's step counts): loaded for each
        state[Key.TORCH_RNG] = torch.zeros(16, dtype=torch.uint8)  # the shape of a CUDA generator's state
        return state

    with pytest.warns(RuntimeWarning, match="dropout generator was on another kind of device"):
        resumed = fit(EMOE(cfg.model), make_data(), cfg, resume=moved())
    assert resumed.status == "completed" and [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    again = fit(EMOE(cfg.model), make_data(), cfg, resume=moved())  # the fresh stream is the run's own
    assert [r.valid for r in again.history] == [r.valid for r in resumed.history]
