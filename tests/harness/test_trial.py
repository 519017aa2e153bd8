"""A trial's configuration is resolved once in the driver (plan or searcher) and travels typed to the worker,
which trains exactly that configuration without building it again."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

import harness.study.trial as trial_module
from emoe.config import ConfigError
from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.load import parse_spec
from harness.study.plan import build_plan
from harness.study.samplers import make_sampler
from harness.study.trial import OPEN_DIMS, Trial, resolve_point
from harness.tune import trainable as trainable_module
from harness.tune.search import StudySearch
from harness.tune.trainable import TrialContext, emoe_trainable
from tests.harness.conftest import tiny_study


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every configuration built, by the seed it was built for (all go through resolve_point)."""
    counts: Counter[str] = Counter()
    real = trial_module.build_config

    def counting(nested):
        counts[str(nested["train"].get("seed"))] += 1
        return real(nested)

    monkeypatch.setattr(trial_module, "build_config", counting)
    return counts


def test_resolve_point_applies_overrides_dims_and_seed() -> None:
    cfg = resolve_point({"model": {"d_model": 8}}, {"model.n_heads": 2}, OPEN_DIMS, seed=7)
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.train.seed) == (8, 2, 7)
    assert cfg.model.len_text == OPEN_DIMS["model.len_text"]
    with pytest.raises(ConfigError, match="n_heads"):
        resolve_point({"model": {"d_model": 8}}, {"model.n_heads": 3}, OPEN_DIMS)


def test_the_plan_resolves_each_trial_once(resolutions: Counter[str]) -> None:
    spec = parse_spec(tiny_study(grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1, 2]))
    data = load_study_data(spec.data)
    resolutions.clear()  # validation before the data are read resolved each point with open dimensions
    plan = build_plan(spec, data)
    assert len(plan.trials) == 6
    assert resolutions == Counter({"1": 3, "2": 3})  # one build per (point, seed), nothing else
    assert all(isinstance(t, Trial) for t in plan.trials)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.trials[0].seed = 3  # type: ignore[misc]


def test_the_searcher_resolves_each_trial_once(tmp_path, resolutions: Counter[str]) -> None:
    spec = parse_spec(tiny_study(grid=None, seeds=[1, 2], search={
        "n_trials": 3, "sampler": "random", "params": {"train.lr": {"type": "loguniform", "low": 1e-4,
                                                                     "high": 1e-2}}}))
    plan = build_plan(spec, load_study_data(spec.data))
    store = ResultStore(tmp_path, spec.name)
    store.create("", {})
    search = StudySearch(plan.space, plan.factory, store, n_configs=3, metric="objective", mode="min",
                         sampler=make_sampler("random", {}, 0),
                         storage=JournalStorage(JournalFileBackend(str(store.journal_path))),
                         study_name=spec.name)
    resolutions.clear()
    trials = [search.suggest(f"t{i}")["trial"] for i in range(6)]
    for i in range(6):  # asking again (Tune does after a restore) builds nothing
        search.suggest(f"t{i}")
    assert len({t.trial_id for t in trials}) == 6
    assert resolutions == Counter({"1": 3, "2": 3})


def test_the_worker_trains_the_planned_configuration_without_building_it(
        tmp_path, monkeypatch: pytest.MonkeyPatch, resolutions: Counter[str]) -> None:
    spec = parse_spec(tiny_study(grid=None, seeds=[1]))
    plan = build_plan(spec, load_study_data(spec.data))
    store = ResultStore(tmp_path, spec.name)
    store.create("", {})
    ctx = TrialContext(store=store, label_kind="mosi", objective="valid_mae", mode="min", cpus=1, gpus=0,
                       code_version="test", data="tiny")
    trained = []

    class Stop(Exception):
        pass

    def fake_train(cfg, data, **kwargs):
        trained.append(cfg)
        raise Stop

    import emoe.train

    monkeypatch.setattr(emoe.train, "train_emoe", fake_train)  # imported by the trainable when a trial runs
    monkeypatch.setattr(trainable_module.tune, "get_checkpoint", lambda: None)
    resolutions.clear()
    with pytest.raises(Stop):
        emoe_trainable({"trial": plan.trials[0]}, data=plan.data.data, ctx=ctx)
    assert trained == [plan.trials[0].config] and trained[0] is plan.trials[0].config
    assert sum(resolutions.values()) == 0
    assert store.status(plan.trials[0].trial_id) == "failed"  # the row says what happened


def test_a_trial_read_back_from_its_json_is_the_same_trial_phase_included() -> None:
    spec = parse_spec(tiny_study(grid=None, seeds=[1]))
    plan = build_plan(spec, load_study_data(spec.data))
    confirm = dataclasses.replace(plan.trials[0], phase="confirm")
    assert Trial.from_json(confirm.to_json()) == confirm
    older = {k: v for k, v in confirm.to_json().items() if k != "phase"}  # a trial.json from before phases
    assert Trial.from_json(older).phase == "tune"
