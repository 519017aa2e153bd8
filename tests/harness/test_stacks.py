"""Stacked trials (``resources.stack``): grouping, --dry-run, the refusal in searches, members that give
exactly what they give alone (float64, in process), a killed stack resumed member by member from the
rows and checkpoints an earlier run left, and whole studies on Ray (float32, ASHA, --retry-failed)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.results.sink import ResultStore
from harness.run import main
from harness.study.data import load_study_data
from harness.study.load import load_spec
from harness.study.plan import build_plan
from harness.study.stacks import Stack, member_bytes, memory_cap, n_parameters, plan_stacks
from harness.study.trial import Trial
from harness.tune import stacked as stacked_module
from harness.tune import trainable as trainable_module
from harness.tune.resume import describe_tune_trial, earlier_trials
from harness.tune.stacked import member_metrics, study_trainable
from harness.tune.trainable import TrialContext
from tests.harness.conftest import TINY_BASE, tiny_study

#: Ordering of each results table for a row-by-row comparison.
KEYS = {"trials": ["trial_id"], "epochs": ["trial_id", "epoch"], "router": ["trial_id", "sample"],
        "predictions": ["trial_id", "split", "sample"]}
METRICS = ("train_", "valid_", "test_", "w_", "pred", "label")


def _plan(write_study, **fields):
    spec = load_spec(write_study(tiny_study(**fields)))
    return build_plan(spec, load_study_data(spec.data))


# --- which trials stack -------------------------------------------------------------------------------

def test_stack_n_groups_same_shaped_trials_in_run_order_and_keeps_every_trial(write_study):
    plan = _plan(write_study, grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, resources={"stack": 3})
    stacks = plan_stacks(plan.trials, plan.spec.resources)
    assert [len(s.members) for s in stacks.stacks] == [3, 3] and len(stacks.units) == 2
    assert [t.trial_id for s in stacks.stacks for t in s.members] == [t.trial_id for t in plan.trials]
    assert stacks.notes == []
    assert [len(s.members) for s in plan_stacks(plan.trials[1:], plan.spec.resources).stacks] == [3, 2]
    assert plan_stacks(plan.trials[:4], plan.spec.resources).units[-1] is plan.trials[3]  # a rest of one: alone


def test_auto_stacks_each_configurations_seeds(write_study):
    plan = _plan(write_study, grid={"loss.distill_weight": [0.0, 1.0]}, seeds=[1, 2, 3], resources={"stack": "auto"})
    stacks = plan_stacks(plan.trials, plan.spec.resources)
    assert len(stacks.stacks) == 2 and len(stacks.units) == 2
    for s in stacks.stacks:
        assert len({t.config_id for t in s.members}) == 1 and [t.seed for t in s.members] == [1, 2, 3]


def test_memory_rule_grows_with_the_model_and_caps_auto():
    from emoe.config import EMOEConfig, ModelConfig, TrainConfig
    dims = {"d_text": 12, "d_audio": 5, "d_vision": 6, "len_text": 8, "len_audio": 8, "len_vision": 8}
    small = EMOEConfig(model=ModelConfig(**dims, d_model=8, n_heads=2, n_levels=1), train=TrainConfig(batch_size=16))
    big = EMOEConfig(model=ModelConfig(**dims, d_model=64, n_heads=2, n_levels=2), train=TrainConfig(batch_size=64))
    assert member_bytes(big) > member_bytes(small) > 0
    # on a GPU the accumulation window's batches go through one forward: their activations at once
    windowed = member_bytes(big, gpu=True) - member_bytes(big)
    assert windowed == 9 * (member_bytes(big) - 16 * n_parameters(big))  # update_epochs 10: 9 more batches
    single = EMOEConfig(model=big.model, train=TrainConfig(batch_size=64, window_forward=False))
    assert member_bytes(single, gpu=True) == member_bytes(big)
    assert memory_cap(big, gpus=0.001, slots=1) == 1  # a tiny GPU share: never below one member
    assert memory_cap(small, gpus=0, slots=1) >= memory_cap(small, gpus=0, slots=64)


def test_trials_that_cannot_stack_run_alone_with_a_note(write_study):
    plan = _plan(write_study, grid={"model.d_model": [8, 16]}, seeds=[1], resources={"stack": 2})
    stacks = plan_stacks(plan.trials, plan.spec.resources)
    assert stacks.stacks == [] and stacks.units == plan.trials
    assert any("same shapes" in n for n in stacks.notes)


def test_a_search_refuses_stack_above_one_before_anything_is_created(write_study, tmp_path, capsys):
    search = {"n_trials": 2, "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    spec = write_study(tiny_study(grid=None, search=search, resources={"stack": 2}))
    assert main([str(spec), "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "resources.stack: 2 is not supported for searches" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    auto = write_study(tiny_study(grid=None, search=search, resources={"stack": "auto"}), "auto.yaml")
    assert main([str(auto), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "none in a search" in capsys.readouterr().out


def test_dry_run_lists_the_stacks(write_study, tmp_path, capsys):
    study = tiny_study(grid={"loss.distill_weight": [0.0, 1.0]}, resources={"stack": 2})
    assert main([str(write_study(study)), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = _plan(write_study, grid={"loss.distill_weight": [0.0, 1.0]}, resources={"stack": 2})
    assert "stacks (resources.stack: 2): 2 stack(s) of 4 trials, 0 trial(s) alone, 2 Tune trials" in out
    for s in plan_stacks(plan.trials, plan.spec.resources).stacks:
        line = next(ln for ln in out.splitlines() if s.stack_id in ln)
        assert all(t.trial_id in line for t in s.members)
    assert "counts each stacked member as a trial alone" in out  # the estimate does not pretend a speed-up
    assert not (tmp_path / "r").exists()


def test_confirmation_trials_stack_each_configurations_fresh_seeds(write_study):
    from harness.study.confirm import CONFIRM, confirmation_plan, confirmation_trials

    plan = _plan(write_study, grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1],
                 confirm={"top": 2, "seeds": [5, 6]}, resources={"stack": "auto"})
    rows = pd.DataFrame([{"trial_id": t.trial_id, "config_id": t.config_id, "variant": t.variant, "phase": "tune",
                          "status": "completed", "objective": float(i)} for i, t in enumerate(plan.trials)])
    confirm = confirmation_plan(plan, confirmation_trials(plan, rows))
    stacks = plan_stacks(confirm.trials, confirm.spec.resources)
    assert len(stacks.units) == 2 and len(stacks.stacks) == 2  # the 2 best configurations, each one stack
    for s in stacks.stacks:
        assert [t.seed for t in s.members] == [5, 6] and {t.phase for t in s.members} == {CONFIRM}
        assert len({t.config_id for t in s.members}) == 1


def test_how_trials_run_may_change_on_resume(write_study):
    from harness.run import spec_fingerprint

    fingerprints = [spec_fingerprint(load_spec(write_study(tiny_study(resources={"stack": n}), f"{n}.yaml")))
                    for n in (1, 3, "auto")]
    assert fingerprints[0] == fingerprints[1] == fingerprints[2]
    def with_train(**train: object) -> dict[str, object]:
        return {**TINY_BASE, "train": {**TINY_BASE["train"], **train}}

    for free in ({"resources": {"cpus": 2, "gpus": 0.5}},  # how trials share the machine and run
                 {"base": with_train(compile="graphs", device="cpu", eval_batch_size=7, window_forward=False)}):
        changed = spec_fingerprint(load_spec(write_study(tiny_study(**free), "free.yaml")))
        assert changed == fingerprints[0], free
    what = spec_fingerprint(load_spec(write_study(tiny_study(base=with_train(lr=0.5)), "lr.yaml")))
    assert what != fingerprints[0]  # what a trial computes still may not change


def test_a_stack_folder_describes_its_members_and_their_own_checkpoints(write_study, tmp_path):
    plan = _plan(write_study, seeds=[1])
    stack = Stack(tuple(plan.trials))
    assert Stack.from_json(stack.to_json()) == stack
    folder = tmp_path / "tune" / "trial_1"
    describe_tune_trial(folder, stack)
    first = plan.trials[0].trial_id
    for n, epochs in ((1, 1), (2, 2)):  # member 0 in two checkpoints, member 1 only in the first
        for t in plan.trials[: 2 if n == 1 else 1]:
            own = folder / f"checkpoint_00000{n}" / t.trial_id
            own.mkdir(parents=True)
            (own / "state.pt").write_bytes(b"x")
            (own / "meta.json").write_text('{"epochs": %s}' % ([{}] * epochs))
    found = earlier_trials(tmp_path / "tune")
    assert set(found) == {t.trial_id for t in plan.trials}
    assert [e for e, _ in found[first].checkpoints] == [2, 1]
    assert found[first].checkpoints[0][1].endswith(f"checkpoint_000002/{first}")
    assert [e for e, _ in found[plan.trials[1].trial_id].checkpoints] == [1]


# --- trackers: one run per member ---------------------------------------------------------------------

class _TuneTrial:
    """What the trackers read of a Tune trial: its config (hashable by identity, like Tune's)."""

    def __init__(self, config: dict) -> None:
        self.config = config


def test_trackers_give_each_member_of_a_stack_its_own_run(write_study, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harness.tune.trackers import MLflowTracker, TensorBoardTracker

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    plan = _plan(write_study, seeds=[1])
    a, b = plan.trials
    store = ResultStore(tmp_path / "results", plan.spec.name)
    store.create("", {})
    uri = (tmp_path / "mlruns").as_uri()
    trackers = [MLflowTracker(store, tracking_uri=uri, experiment_name="exp"), TensorBoardTracker(store, tmp_path / "tb")]
    trial = _TuneTrial({"trial": Stack((a, b))})
    reports = [{"epoch": 1, "objective": 0.85, "members": {a.trial_id: {"epoch": 1, "valid_mae": 0.9},
                                                           b.trial_id: {"epoch": 1, "valid_mae": 0.8}}},
               {"epoch": 2, "objective": 0.8, "members": {b.trial_id: {"epoch": 2, "valid_mae": 0.7}}}]
    for tracker in trackers:
        tracker.setup()
        tracker.on_trial_start(0, [], trial)
        for i, report in enumerate(reports, 1):
            tracker.on_trial_result(i, [], trial, report)
        tracker.on_trial_complete(2, [], trial)
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("exp").experiment_id])}
    assert set(runs) == {a.trial_id, b.trial_id}
    assert runs[a.trial_id].info.run_name == f"{a.variant}-seed1"
    history = {t: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "valid_mae")]
               for t, r in runs.items()}
    assert history == {a.trial_id: [(1, 0.9)], b.trial_id: [(1, 0.8), (2, 0.7)]}
    for t, steps in ((a.trial_id, [1]), (b.trial_id, [1, 2])):
        events = EventAccumulator(str(tmp_path / "tb" / t))
        events.Reload()
        assert [e.step for e in events.Scalars("valid_mae")] == steps


# --- in process: a stack against its members alone ------------------------------------------------------

class _Killed(BaseException):
    """What a SIGKILL does to a trainable: nothing after it runs (no row, no 'failed')."""


class _FakeCheckpoint:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def from_directory(cls, path: str) -> _FakeCheckpoint:
        return cls(Path(path))

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.path)


class _FakeTune:
    """The Tune session calls of the trainables: keeps checkpoints in Tune's layout, may die after a report."""

    Checkpoint = _FakeCheckpoint

    def __init__(self, folder: Path | None = None, *, kill_after: int | None = None, restore: Path | None = None):
        self.folder, self.kill_after, self.restore = folder, kill_after, restore
        self.reports: list[dict] = []

    def get_checkpoint(self):
        """None (a new run: earlier checkpoints come through the context), or ``restore`` (a Tune retry)."""
        return None if self.restore is None else _FakeCheckpoint(self.restore)

    def report(self, metrics, checkpoint=None):
        self.reports.append(dict(metrics))
        if checkpoint is not None and self.folder is not None:
            shutil.copytree(checkpoint.path, self.folder / f"checkpoint_{len(self.reports):06d}")
        if self.kill_after is not None and len(self.reports) >= self.kill_after:
            raise _Killed


def _float64_data(plan):
    def up(split):
        return dataclasses.replace(split, **{f: getattr(split, f).astype(np.float64)
                                             for f in ("text", "audio", "vision", "labels")})
    d = plan.data.data
    return dataclasses.replace(d, train=up(d.train), valid=up(d.valid), test=up(d.test))


def _context(root: Path, plan, **fields) -> TrialContext:
    store = ResultStore(root, plan.spec.name)
    if not store.dir.exists():
        store.create("", {})
    return TrialContext(store=store, label_kind=plan.data.data.label_kind, objective="valid_mae", mode="min",
                        cpus=1, gpus=0, code_version="test", data="tiny", checkpoint_min_interval_s=0.0, **fields)


def _run(monkeypatch, unit, data, ctx, fake: _FakeTune) -> None:
    monkeypatch.setattr(stacked_module, "tune", fake)
    monkeypatch.setattr(trainable_module, "tune", fake)
    study_trainable({"trial": unit}, data=data, ctx=ctx)


def _table(store: ResultStore, name: str) -> pd.DataFrame:
    return pd.read_parquet(store.dir / name).sort_values(KEYS[name]).reset_index(drop=True)


def test_a_stack_of_three_writes_what_each_member_writes_alone_in_float64(write_study, tmp_path, monkeypatch, float64):
    plan = _plan(write_study, grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1, 2, 3])
    by = {(t.overrides["loss.distill_weight"], t.seed): t for t in plan.trials}
    members = (by[0.0, 1], by[0.5, 2], by[1.0, 3])  # different seeds and different loss weights
    data = _float64_data(plan)
    alone, stacked = _context(tmp_path / "alone", plan), _context(tmp_path / "stacked", plan)
    for t in members:
        _run(monkeypatch, t, data, alone, _FakeTune())
    fake = _FakeTune()
    _run(monkeypatch, Stack(members), data, stacked, fake)
    assert [sorted(r["members"]) for r in fake.reports] == [sorted(t.trial_id for t in members)] * 2
    for report in fake.reports:  # the stack's objective: the mean of its members' own
        own = [member_metrics(report, t.trial_id)["objective"] for t in members]
        assert report["objective"] == pytest.approx(sum(own) / 3)
    for name in KEYS:
        a, s = _table(alone.store, name), _table(stacked.store, name)
        assert list(a["trial_id"]) == list(s["trial_id"]) and len(a) > 0, name
        cols = [c for c in a.columns if c.startswith(METRICS) or c in ("objective", "best_epoch", "epochs_run")]
        pd.testing.assert_frame_equal(a[cols].astype(float), s[cols].astype(float), rtol=1e-6, atol=1e-6, obj=name)
        same = [c for c in ("status", "variant", "seed", "config_id", "attempts", "epoch", "improved") if c in a]
        pd.testing.assert_frame_equal(a[same], s[same], obj=name)
    trials = _table(stacked.store, "trials")
    assert (trials["status"] == "completed").all() and trials["valid_mae"].nunique() == 3
    for t in members:  # every member has its own run record, with this attempt's time
        assert stacked.store.read_run(t.trial_id)["attempts"] == 1


def test_a_diverging_member_gets_its_own_row_and_the_others_go_on(write_study, tmp_path, monkeypatch, float64):
    variants = {"ok": {"train.update_epochs": 1}, "explode": {"train.lr": 1e30, "train.update_epochs": 1}}
    plan = _plan(write_study, grid=None, ablation={"baseline": "ok", "variants": variants}, seeds=[1])
    data = _float64_data(plan)
    alone, stacked = _context(tmp_path / "alone", plan), _context(tmp_path / "stacked", plan)
    for t in plan.trials:
        _run(monkeypatch, t, data, alone, _FakeTune())
    _run(monkeypatch, Stack(tuple(plan.trials)), data, stacked, _FakeTune())
    a, s = _table(alone.store, "trials"), _table(stacked.store, "trials")
    assert sorted(s["status"]) == ["completed", "diverged"] and list(a["status"]) == list(s["status"])
    assert list(a["error"]) == list(s["error"]) and list(a["epochs_run"]) == list(s["epochs_run"])


@pytest.mark.parametrize("how", ["resume", "tune retry"])
def test_a_killed_stack_resumes_each_member_from_its_own_checkpoint(write_study, tmp_path, monkeypatch, float64,
                                                                    how):
    """resume: the rule of main's runner, step by step: rows say what is left, the earlier run's Tune folder
    (its trial.json and checkpoints) where each member continues, and the stacks are planned anew.
    tune retry: Tune starts the same stack again from its own last checkpoint (a worker lost)."""
    variants = {"short": {"train.max_epochs": 2}, "long_a": {"train.max_epochs": 4},
                "long_b": {"train.max_epochs": 4, "loss.distill_weight": 1.0}}
    plan = _plan(write_study, grid=None, ablation={"baseline": "short", "variants": variants}, seeds=[1],
                 resources={"stack": 3})
    short, long_a, long_b = plan.trials
    data = _float64_data(plan)
    (stack,) = plan_stacks(plan.trials, plan.spec.resources).stacks

    whole = _context(tmp_path / "whole", plan)
    _run(monkeypatch, stack, data, whole, _FakeTune())

    cut = _context(tmp_path / "cut", plan)
    folder = tmp_path / "cut" / "tune" / "trial_0"
    describe_tune_trial(folder, stack)  # as ResultRecorder.on_trial_start does
    with pytest.raises(_Killed):  # the short member ends at epoch 2; the stack dies after epoch 3's report
        _run(monkeypatch, stack, data, cut, _FakeTune(folder, kill_after=3))
    assert cut.store.status(short.trial_id) == "completed" and cut.store.status(long_a.trial_id) is None
    epochs_before = _table(cut.store, "epochs").set_index(["trial_id", "epoch"])

    if how == "resume":
        earlier = earlier_trials(tmp_path / "cut" / "tune")
        assert [e for e, _ in earlier[long_a.trial_id].checkpoints] == [3, 2, 1]
        todo = [t for t in plan.trials if cut.store.status(t.trial_id) is None]
        units = plan_stacks(todo, plan.spec.resources).units
        assert [u.trial_ids for u in units] == [[long_a.trial_id, long_b.trial_id]]  # the rest, stacked anew
        fake = _FakeTune(tmp_path / "cut" / "tune" / "trial_1")
        _run(monkeypatch, units[0], data, _resumed(cut, tmp_path / "cut" / "tune"), fake)
    else:  # the short member has its row: only the others train, each from its part of the checkpoint
        fake = _FakeTune(restore=folder / "checkpoint_000003")
        _run(monkeypatch, stack, data, cut, fake)
    assert [r["epoch"] for r in fake.reports] == [4]  # only epoch 4 trained again

    a, b = _table(whole.store, "trials").set_index("trial_id"), _table(cut.store, "trials").set_index("trial_id")
    assert list(b["epochs_run"]) == list(a["epochs_run"]) and sorted(b["epochs_run"]) == [2, 4, 4]
    assert b.loc[short.trial_id, "attempts"] == 1 and b.loc[long_a.trial_id, "attempts"] == 2
    cols = [c for c in a.columns if c.startswith(("valid_", "test_"))] + ["objective", "best_epoch"]
    pd.testing.assert_frame_equal(a[cols], b[cols], rtol=1e-6)
    ea, eb = _table(whole.store, "epochs"), _table(cut.store, "epochs")
    metric_cols = [c for c in ea.columns if c.startswith(("train_", "valid_", "test_", "w_"))]
    pd.testing.assert_frame_equal(ea[metric_cols], eb[metric_cols], rtol=1e-6)
    for epoch in (1, 2, 3):  # restored from the member's checkpoint, not trained again
        key = (long_b.trial_id, epoch)
        assert eb.set_index(["trial_id", "epoch"])["time_s"][key] == epochs_before["time_s"][key]


def _resumed(ctx: TrialContext, tune_dir: Path) -> TrialContext:
    """The context of a resumed run: every trial's checkpoints from the earlier runs' Tune folders."""
    earlier = earlier_trials(tune_dir)
    return dataclasses.replace(ctx, earlier_checkpoints={t: tuple(d for _, d in e.checkpoints)
                                                         for t, e in earlier.items()})


@pytest.mark.parametrize("before", ["alone", "stacked"])
def test_a_checkpoint_resumes_whether_the_next_run_stacks_it_or_not(write_study, tmp_path, monkeypatch, float64,
                                                                    before):
    """A member's checkpoint is a trial's checkpoint: a resumed run that stacks differently continues it."""
    plan = _plan(write_study, grid={"loss.distill_weight": [0.0, 1.0]}, seeds=[1], resources={"stack": 2})
    first, second = plan.trials
    data = _float64_data(plan)
    whole = _context(tmp_path / "whole", plan)
    _run(monkeypatch, Stack((first, second)), data, whole, _FakeTune())
    cut = _context(tmp_path / "cut", plan)
    folder = tmp_path / "cut" / "tune" / "trial_0"
    unit: Trial | Stack = first if before == "alone" else Stack((first, second))
    describe_tune_trial(folder, unit)
    with pytest.raises(_Killed):  # killed after epoch 1 (of 2)
        _run(monkeypatch, unit, data, cut, _FakeTune(folder, kill_after=1))
    resumed = _resumed(cut, tmp_path / "cut" / "tune")
    fakes = [_FakeTune() for _ in range(2)]
    if before == "alone":  # the next run stacks it with a trial that has not started
        _run(monkeypatch, Stack((first, second)), data, resumed, fakes[0])
        assert [sorted(r["members"]) for r in fakes[0].reports] == [sorted([first.trial_id, second.trial_id]),
                                                                    [second.trial_id]]
    else:  # the next run trains each member alone
        for t, fake in zip((first, second), fakes):
            _run(monkeypatch, t, data, resumed, fake)
        assert [[r["epoch"] for r in f.reports] for f in fakes] == [[2], [2]]
    a, b = _table(whole.store, "epochs"), _table(cut.store, "epochs")
    metric_cols = [c for c in a.columns if c.startswith(("train_", "valid_", "test_", "w_"))]
    pd.testing.assert_frame_equal(a[metric_cols], b[metric_cols], rtol=1e-6)
    attempts = dict(_table(cut.store, "trials").set_index("trial_id")["attempts"])
    assert attempts == {first.trial_id: 2, second.trial_id: 1 if before == "alone" else 2}


# --- on Ray ---------------------------------------------------------------------------------------------

#: float32 tolerance of stacked vs alone: the vmapped kernels sum in another order than the unbatched ones
#: (last-bit differences), which a few epochs of Adam grow to ~1e-5 at most on this tiny configuration; a
#: real difference (another seed, data order or dropout mask) moves the metrics by 1e-2 or more.
REL = 1e-4


@pytest.mark.ray
@pytest.mark.slow
def test_a_stacked_study_on_ray_equals_the_unstacked_one_member_by_member(ray_cluster, write_study, tmp_path,
                                                                          capsys):
    results = tmp_path / "results"
    tables = {}
    for stack in (1, 3):
        study = tiny_study(name=f"s{stack}", grid={"loss.distill_weight": [0.0, 0.5, 1.0]},
                           resources={"stack": stack})
        spec = write_study(study, f"s{stack}.yaml")
        assert main([str(spec), "--results", str(results), "--address", ray_cluster.address]) == 0
        out = capsys.readouterr().out
        assert "6/6 done (6 completed)" in out  # progress counts members
        tables[stack] = {name: pd.read_parquet(results / f"s{stack}" / name).sort_values(keys).reset_index(drop=True)
                         for name, keys in KEYS.items()}
    assert len(list((results / "s3" / "tune").glob("trial_*"))) == 2  # two Tune trials, one per stack
    for t in tables[3]["trials"]["trial_id"]:
        assert (results / "s3" / ".runs" / f"{t}.json").exists()
    # the driver described each stack's Tune folder when it started: a --resume finds every member there
    assert set(earlier_trials(results / "s3" / "tune")) == set(tables[3]["trials"]["trial_id"])
    for name in KEYS:
        a, s = tables[1][name], tables[3][name]
        assert list(a["trial_id"]) == list(s["trial_id"]) and len(a) > 0, name
        cols = [c for c in a.columns if c.startswith(METRICS) or c == "objective"]
        pd.testing.assert_frame_equal(a[cols].astype(float), s[cols].astype(float), rtol=REL, atol=1e-6, obj=name)
    assert main([str(tmp_path / "s3.yaml"), "--results", str(results), "--address", ray_cluster.address,
                 "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.slow
def test_asha_stops_a_stack_as_a_whole_and_each_member_gets_its_own_pruned_row(ray_cluster, write_study, tmp_path):
    study = tiny_study(name="sasha", grid={"train.lr": [3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5]}, seeds=[1],
                       concurrency=1, resources={"stack": 2},
                       scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    study["base"]["train"]["max_epochs"] = 4
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results), "--address", ray_cluster.address]) == 0
    trials = pd.read_parquet(results / "sasha" / "trials")
    assert len(trials) == 8 and trials["trial_id"].is_unique  # every member has its own row
    spec = load_spec(results / "sasha" / "spec.yaml")
    stacks = plan_stacks(build_plan(spec, load_study_data(spec.data)).trials, spec.resources).stacks
    status = trials.set_index("trial_id")["status"]
    pruned = [s for s in stacks if "pruned" in {status[t] for t in s.trial_ids}]
    assert pruned and len(pruned) < len(stacks)  # ASHA stopped some stacks, not all
    for s in pruned:  # a stack stops as a whole: its members are pruned together, before the budget
        assert {status[t] for t in s.trial_ids} == {"pruned"}
    rows = trials[trials["status"] == "pruned"]
    assert (rows["epochs_run"] < 4).all() and rows["objective"].notna().all() and rows["valid_mae"].notna().all()


@pytest.mark.ray
@pytest.mark.slow
def test_retry_failed_runs_a_failed_stacks_members_again_as_a_stack(ray_cluster, gpu_node, write_study, tmp_path):
    from tests.harness.conftest import GPUS_PER_TRIAL, MISSING_DEVICE

    study = tiny_study(name="sfail", seeds=[1], max_failures=0, resources={"gpus": GPUS_PER_TRIAL, "stack": 2})
    study["base"]["train"]["device"] = MISSING_DEVICE  # every stack raises at its start
    results = tmp_path / "results"
    args = [str(write_study(study)), "--results", str(results), "--address", ray_cluster.address]
    assert main(args) != 0
    first = pd.read_parquet(results / "sfail" / "trials").set_index("trial_id")
    assert len(first) == 2 and (first["status"] == "failed").all() and (first["attempts"] == 1).all()
    assert first["error"].str.contains("cuda").all()
    with contextlib.suppress(SystemExit):
        main([*args, "--resume", "--retry-failed"])
    again = pd.read_parquet(results / "sfail" / "trials").set_index("trial_id")
    assert set(again.index) == set(first.index) and (again["attempts"] == 2).all()
    assert len(list((results / "sfail" / "tune").glob("trial_*"))) == 2  # one Tune trial per run: the stack


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_driver_resumes_a_stack_member_by_member_from_its_checkpoints(ray_cluster, write_study, tmp_path):
    import subprocess
    import sys

    from tests.harness.conftest import REPO
    from tests.harness.test_fault_driver_crash import _kill_driver_when, _wait_actors_gone

    # one stack of two members, killed while both train (that a trial finished before a driver crash is not
    # run again is test_fault_driver_crash.py's; here each member must continue from its own checkpoint)
    study = tiny_study(name="skill", grid={"loss.distill_weight": [0.0, 1.0]}, seeds=[1], concurrency=1,
                       max_failures=0, checkpoint_min_interval_s=0, resources={"stack": 2})
    study["base"]["train"]["max_epochs"] = 8
    study["data"]["synthetic"]["n_train"] = 2048  # epochs of a tenth of a second or more: 4-6 of 8 gets caught
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "skill"
    cmd = [sys.executable, "-m", "harness.run", str(spec_path), "--results", str(results),
           "--address", ray_cluster.address]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill once both members have written 4 to 6 of their 8 epochs
    done, flying = _kill_driver_when(proc, root, lambda done, flying: len(flying) == 2
                                     and all(4 <= n <= 6 for n in flying.values()))
    _wait_actors_gone()
    epochs_before = pd.read_parquet(root / "epochs").set_index(["trial_id", "epoch"])
    assert not done and not list((root / "trials").glob("*.parquet"))

    assert main([str(spec_path), "--results", str(results), "--address", ray_cluster.address, "--resume"]) == 0
    after = pd.read_parquet(root / "trials").set_index("trial_id")
    assert len(after) == 2 and (after["status"] == "completed").all()
    epochs = pd.read_parquet(root / "epochs")
    assert epochs["trial_id"].nunique() == 2 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs.groupby("trial_id")["epoch"].apply(list).map(lambda e: sorted(e) == list(range(1, 9))).all()
    for tid, n in flying.items():  # each member continued from its own checkpoint (epoch n - 3 or later)
        assert after.loc[tid, "attempts"] == 2
        kept = epochs.set_index(["trial_id", "epoch"])["time_s"]
        for epoch in range(1, n - 2):
            assert kept[(tid, epoch)] == epochs_before["time_s"][(tid, epoch)], (tid, epoch)


def test_a_study_fingerprinted_with_fields_now_free_resumes_with_them_changed(write_study, tmp_path):
    """study.json files written before resources.cpus/gpus and the run-only training fields became free hold
    them in their fingerprint: a resume that changes them is not refused for it."""
    from harness.results.sink import ResultStore
    from harness.run import check_existing, spec_fingerprint
    from harness.study.errors import SpecError

    spec = load_spec(write_study(tiny_study(name="old")))
    old = {**spec_fingerprint(spec), "resources.cpus": 4.0, "base.train.compile": "off", "base.train.device": "cuda"}
    store = ResultStore(tmp_path / "results", "old")
    store.create("name: old\n", {"study": "old", "status": "interrupted", "fingerprint": old})
    assert check_existing(store, spec, resume=True)["status"] == "interrupted"
    store.update_info(fingerprint={**old, "base.train.lr": 0.5})
    with pytest.raises(SpecError, match=r"base\.train\.lr"):
        check_existing(store, spec, resume=True)


def test_auto_sizes_gpu_stacks_from_nvidia_smi_without_a_cuda_context(tmp_path, monkeypatch):
    """``trial_memory`` for GPU trials reads the smallest visible GPU from nvidia-smi (a stand-in here):
    torch's query would open a CUDA context in the driver and keep its memory on the trials' GPU."""
    import torch

    from harness.study.stacks import trial_memory

    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '0, GPU-aaa, 81920'\necho '1, GPU-bbb, 40960'\necho '2, GPU-ccc, 143771'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")

    def no_context(*args, **kwargs):
        raise AssertionError("torch's device query opens a CUDA context in the driver")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_context)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert trial_memory(0.5, slots=1) == (40960 << 20) // 2  # the smallest of the GPUs a trial may get
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-aaa")
    assert trial_memory(0.25, slots=1) == (81920 << 20) // 4
