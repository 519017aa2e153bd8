"""StudySearch (OptunaSearch for studies): seeds, infeasible proposals and pruned trials, without Ray."""

from __future__ import annotations

import copy

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.load import parse_spec
from harness.study.plan import build_plan
from harness.study.samplers import make_sampler, sampler_errors
from harness.tune.search import StudySearch
from harness.tune.trainable import TrialContext, write_trial_row
from tests.harness.conftest import tiny_study


def _setup(tmp_path, params, seeds=(1, 2), sampler="random", n_configs=4):
    spec = parse_spec(tiny_study(grid=None, seeds=list(seeds),
                                 search={"n_trials": 4, "sampler": sampler, "params": params}))
    plan = build_plan(spec, load_study_data(spec.data))
    store = ResultStore(tmp_path, spec.name)
    store.create("", {})
    storage = JournalStorage(JournalFileBackend(str(store.journal_path)))
    search = StudySearch(plan.space, plan.factory, store, n_configs=n_configs, metric="objective", mode="min",
                         sampler=make_sampler(sampler, {}, 0), storage=storage, study_name=spec.name)
    ctx = TrialContext(store=store, label_kind="mosi", objective="valid_mae", mode="min", cpus=1, gpus=0,
                       code_version="test", data="tiny")
    return search, store, ctx, storage


def _finish(ctx, trial, value):
    write_trial_row(ctx, trial, status="completed", error=None, best_epoch=1, epochs_run=2,
                    valid={"mae": value, "loss": value}, test={"mae": value})


LR = {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}


def test_each_configuration_runs_once_per_seed_with_paired_ids(tmp_path):
    search, *_ = _setup(tmp_path, LR)
    a, b, c = (search.suggest(t)["trial"] for t in ("t0", "t1", "t2"))
    assert a["emoe"]["train"]["lr"] == b["emoe"]["train"]["lr"] != c["emoe"]["train"]["lr"]
    assert (a["seed"], b["seed"], c["seed"]) == (1, 2, 1)
    assert a["config_id"] == b["config_id"] and a["trial_id"] != b["trial_id"]
    assert search.suggest("t0") == {"trial": a}  # asking again for the same Tune trial is stable


def test_pruned_seed_makes_the_optuna_trial_pruned_and_completed_ones_are_averaged(tmp_path):
    search, _, ctx, storage = _setup(tmp_path, LR)
    trials = {t: search.suggest(t)["trial"] for t in ("t0", "t1", "t2", "t3")}
    # configuration 0: seed 1 stopped by the scheduler (no row), seed 2 completed
    search.on_trial_result("t0", {"objective": 0.9, "training_iteration": 1})
    search.on_trial_result("t0", {"objective": 0.8, "training_iteration": 2})
    _finish(ctx, trials["t1"], 0.7)
    search.on_trial_complete("t0", {"objective": 0.8, "training_iteration": 2})
    search.on_trial_complete("t1", {"objective": 0.7})
    # configuration 1: both seeds completed
    _finish(ctx, trials["t2"], 0.5)
    _finish(ctx, trials["t3"], 0.7)
    search.on_trial_complete("t2", {"objective": 0.5})
    search.on_trial_complete("t3", {"objective": 0.7})
    study = optuna.load_study(study_name="t", storage=storage)
    states = [(t.state, t.value) for t in study.trials]
    assert states[0] == (TrialState.PRUNED, 0.8)  # Optuna keeps the last intermediate value
    assert states[1][0] == TrialState.COMPLETE and states[1][1] == pytest.approx(0.6)
    assert study.trials[0].intermediate_values == {1: 0.9, 2: 0.8}


def test_failed_seeds_fail_the_configuration(tmp_path):
    search, *_, storage = _setup(tmp_path, LR)
    search.suggest("t0"), search.suggest("t1")
    search.on_trial_complete("t0", None, error=True)
    search.on_trial_complete("t1", None, error=True)
    assert optuna.load_study(study_name="t", storage=storage).trials[0].state == TrialState.FAIL


def test_infeasible_proposals_never_reach_ray(tmp_path):
    heads = {"model.n_heads": {"type": "categorical", "choices": [2, 3]}}  # 3 does not divide d_model 8
    search, *_, storage = _setup(tmp_path, heads, seeds=(1,), n_configs=12)
    proposed = [search.suggest(f"t{i}")["trial"]["emoe"]["model"]["n_heads"] for i in range(12)]
    assert set(proposed) == {2}
    study = optuna.load_study(study_name="t", storage=storage)
    rejected = [t for t in study.trials if "infeasible" in t.user_attrs]
    assert rejected and all(t.state == TrialState.FAIL for t in rejected)
    assert "must divide d_model" in rejected[0].user_attrs["infeasible"]


def test_searcher_state_survives_save_and_restore(tmp_path):
    search, *_ = _setup(tmp_path, LR)
    first = search.suggest("t0")["trial"]
    search.save(str(tmp_path / "searcher.pkl"))
    again, *_ = _setup(tmp_path / "other", LR)
    again.restore(str(tmp_path / "searcher.pkl"))
    second = again.suggest("t1")["trial"]  # the second seed of the same configuration
    assert second["config_id"] == first["config_id"] and second["seed"] == 2


def test_sampler_names_and_options_are_checked():
    assert sampler_errors("tpe", {"n_startup_trials": 5}) == []
    assert "unknown sampler" in sampler_errors("bayes", {})[0]
    assert "give the seed as search.seed" in sampler_errors("random", {"seed": 1})[0]
    assert isinstance(make_sampler("tpe", {"n_startup_trials": 3}, 0), optuna.samplers.TPESampler)


def test_a_restored_searcher_adopts_proposals_made_after_its_snapshot(tmp_path):
    """Driver crash: an Optuna trial asked after the last saved searcher state is evaluated again under its
    own number (same trial ids, so its rows are reused); a trial told before the crash is not told twice;
    and no more than n_trials configurations are ever proposed."""
    search, store, ctx, storage = _setup(tmp_path, LR)
    search.save(str(tmp_path / "snapshot.pkl"))  # Tune saved its state here
    a0, a1 = search.suggest("t0")["trial"], search.suggest("t1")["trial"]  # Optuna trial 0, both seeds
    _finish(ctx, a0, 0.5)
    _finish(ctx, a1, 0.7)
    search.on_trial_complete("t0", {"objective": 0.5})
    search.on_trial_complete("t1", {"objective": 0.7})  # told COMPLETE
    lost = search.suggest("t2")["trial"]  # Optuna trial 1 asked, then the driver dies
    restored, *_ = _setup(tmp_path / "other", LR)
    restored._store = store
    restored.restore(str(tmp_path / "snapshot.pkl"))
    b0, b1 = restored.suggest("u0")["trial"], restored.suggest("u1")["trial"]
    assert b0["trial_id"] == lost["trial_id"] and b0["variant"] == "trial001" and b1["seed"] == 2
    study = optuna.load_study(study_name="t", storage=storage)
    assert len(study.trials) == 2  # the orphan was adopted, nothing new asked
    new = [restored.suggest(f"u{i}") for i in range(2, 8)]
    assert [n["trial"]["variant"] for n in new[:4]] == ["trial002", "trial002", "trial003", "trial003"]
    assert new[4:] == [Searcher.FINISHED] * 2  # n_trials = 4 configurations exist
    # Tune trials of configuration 0 that finish again after the restore (Tune's state lagged behind)
    group = copy.deepcopy(search._groups[0])
    group.outcomes = {}
    restored._groups[0] = group
    restored._member_of.update({"t0": (0, 0), "t1": (0, 1)})
    restored.on_trial_complete("t0", {"objective": 0.5})
    restored.on_trial_complete("t1", {"objective": 0.7})  # would tell trial 0 again: skipped quietly
    assert optuna.load_study(study_name="t", storage=storage).trials[0].value == pytest.approx(0.6)


def test_the_searcher_reads_the_journals_trial_list_once_not_per_proposal(tmp_path):
    """Reading every Optuna trial at each proposal and each tell made a 10 000-trial search's driver
    quadratic (bench/scale.py: 12 s of 250 s at 3 000 trials in the journal's trial list alone). The
    searcher reads the list once per start or restore and keeps its own counts; the cap still holds."""
    search, _, ctx, storage = _setup(tmp_path, LR, seeds=(1,), n_configs=30)
    reads = []
    real = search._study.get_trials
    search._study.get_trials = lambda *a, **k: reads.append(1) or real(*a, **k)  # type: ignore[method-assign]
    for i in range(30):
        trial = search.suggest(f"t{i}")["trial"]
        _finish(ctx, trial, 0.5 + i / 100)
        search.on_trial_complete(f"t{i}", {"objective": 0.5 + i / 100})
    assert search.suggest("t30") is Searcher.FINISHED  # n_configs proposals, then no more
    assert len(reads) == 1
    study = optuna.load_study(study_name="t", storage=storage)
    assert len(study.trials) == 30 and all(t.state == TrialState.COMPLETE for t in study.trials)
