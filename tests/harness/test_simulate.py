"""Simulated studies (``simulate: true``): the real driver path with drawn learning curves instead of training.

The curve model is checked without Ray (deterministic per trial, an optimum where the surface puts it);
the whole path on the shared two-worker runtime: rows with a trained trial's columns, study.json, stdout
and report.md saying "simulated", the same numbers for the same trial in another study and after a
resume from checkpoints, ASHA pruning, and a resume that flips the flag refused before Ray starts.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from emoe_schema import SIMULATED_NOTE, epochs_columns
from harness.results.rows import trial_schema
from harness.run import main
from harness.study.data import load_study_data
from harness.study.plan import build_plan
from harness.study.spec import StudySpec
from harness.tune.curves import SimulatedCurve, penalty
from tests.harness.conftest import tiny_study

#: 5 learning rates x 2 distillation weights x 2 seeds = 20 trials, 6 epochs at most
GRID = {"train.lr": [1e-5, 1e-4, 1e-3, 1e-2, 0.08], "loss.distill_weight": [0.0, 0.3]}


def sim_study(name: str, **fields: object) -> dict[str, object]:
    study = tiny_study(name=name, **{"simulate": True, "grid": GRID, **fields})
    study["base"]["train"].update(max_epochs=6, early_stop=3)  # type: ignore[index]
    return study


def plan_of(study: dict[str, object]):
    spec = StudySpec.model_validate(study)
    return build_plan(spec, load_study_data(spec.data))


def test_a_trials_curve_is_deterministic_and_its_optimum_is_where_the_surface_puts_it():
    plan = plan_of(sim_study("curves"))
    trial = plan.trials[0]
    a, b = SimulatedCurve(trial, "mosi"), SimulatedCurve(trial, "mosi")
    assert [a.epoch(e) for e in range(1, 7)] == [b.epoch(e) for e in range(1, 7)]
    other_seed = next(t for t in plan.trials if t.config_id == trial.config_id and t.seed != trial.seed)
    assert SimulatedCurve(other_seed, "mosi").epoch(3).valid != a.epoch(3).valid
    by_lr = {t.config.train.lr: t for t in plan.trials if t.seed == 1 and t.config.loss.distill_weight == 0.3}
    assert min(by_lr, key=lambda lr: penalty(by_lr[lr])) == 1e-3
    best = SimulatedCurve(by_lr[1e-3], "mosi")
    slow = SimulatedCurve(by_lr[1e-5], "mosi")
    assert best.mae(20) < slow.mae(20) and best.mae(20) < best.mae(1)  # better configuration, and it learns
    assert SimulatedCurve(by_lr[0.08], "mosi").epoch(3).diverged  # too high a rate diverges
    cls = SimulatedCurve(trial, "classification", n_classes=3).epoch(2)
    assert set(cls.valid) == {"loss", "acc", "f1_macro", "precision_macro", "recall_macro"}


def test_a_flipped_simulate_flag_is_refused_on_resume(write_study, tmp_path, capsys, ray_init_calls):
    """Both ways, before Ray starts and writing nothing: a study's results are all simulated or all trained."""
    from harness.results.sink import ResultStore
    from harness.run import _study_info

    for started, flipped in ((True, "false"), (False, "true")):
        results = tmp_path / f"r{started}"
        study = sim_study("flip") if started else {**sim_study("flip"), "simulate": None}
        spec = write_study({k: v for k, v in study.items() if v is not None}, name=f"flip{started}.yaml")
        plan = plan_of({k: v for k, v in study.items() if v is not None})
        store = ResultStore(results, "flip")
        store.create("", _study_info(plan, store, "test"))
        before = sorted(p.name for p in store.dir.rglob("*"))
        assert main([str(spec), "--results", str(results), "--resume", "--set", f"simulate={flipped}"]) == 2
        err = capsys.readouterr().err
        assert "simulate: was" in err and "a resumed study must keep its spec" in err
        assert sorted(p.name for p in store.dir.rglob("*")) == before
    assert ray_init_calls == []



@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_simulated_grid_runs_end_to_end_says_so_everywhere_and_repeats_exactly(write_study, tmp_path, capsys):
    results = tmp_path / "results"
    assert main([str(write_study(sim_study("simgrid", report={"formats": ["png"]}))), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"20 trials ({SIMULATED_NOTE})" in out and f"({SIMULATED_NOTE})" in out.split("finished:")[1]
    study = results / "simgrid"
    info = json.loads((study / "study.json").read_text())
    assert info["simulated"] is True and info["status"] == "finished"
    trials = pd.read_parquet(study / "trials")
    assert len(trials) == 20 and trials["trial_id"].is_unique
    assert list(trials.columns) == trial_schema("mosi").names  # a trained trial's columns
    assert trials["data"].str.startswith("simulated: ").all()
    assert set(trials["status"]) == {"completed", "diverged"}  # lr 0.08 diverges
    assert (trials.loc[trials["train.lr"] == 0.08, "status"] == "diverged").all()
    done = trials[trials["status"] == "completed"]
    assert done["test_mae"].notna().all() and (done["epochs_run"] <= 6).all()
    by_lr = done.groupby("train.lr")["valid_mae"].mean()
    assert by_lr[1e-5] > by_lr[1e-4] > by_lr[1e-3]  # a slow rate has not learned much in 6 epochs
    epochs = pd.read_parquet(study / "epochs")
    assert list(epochs.columns) == [c for c, _ in epochs_columns("mosi")]
    ran = trials[trials["epochs_run"] > 0].set_index("trial_id")["epochs_run"]  # not those diverged in epoch 1
    assert epochs.groupby("trial_id")["epoch"].max().to_dict() == ran.to_dict()
    router = pd.read_parquet(study / "router")
    assert set(router["trial_id"]) == set(trials.loc[trials["best_epoch"] > 0, "trial_id"])
    assert router["r_l"].notna().all()  # the synthetic data's true reliabilities beside the weights
    assert set(pd.read_parquet(study / "predictions")["split"]) == {"valid", "test"}
    tune_files = {p.name for p in (study / "tune").rglob("*") if p.is_file()}
    assert "trial.json" in tune_files  # the harness's description of each Tune trial, for --resume
    assert not tune_files & {"result.json", "progress.csv", "params.json"}  # Tune's default loggers are off
    assert not any(name.startswith("events.out.tfevents") for name in tune_files)
    report = (study / "report.md").read_text()
    assert report.startswith("# Report: simgrid (simulated grid study)") and SIMULATED_NOTE in report
    assert SIMULATED_NOTE in (study / "tables" / "status.md").read_text()
    assert json.loads((study / "tables" / "status.md.json").read_text())["simulated"] is True

    # the same trials in another study, cut by a time budget and resumed from their checkpoints: same curves
    again = sim_study("simgrid2", time_budget_s=0.5, checkpoint_min_interval_s=0.0)
    spec = write_study(again, name="again.yaml")
    first = main([str(spec), "--results", str(results)])
    assert first in (0, 4)
    if first == 4:
        assert main([str(spec), "--results", str(results), "--resume", "--set", "time_budget_s=null"]) == 0
    key = ["trial_id", "epoch"]
    cols = [c for c in epochs.columns if c.startswith(("train_", "valid_", "test_", "w_")) or c in key]
    other = pd.read_parquet(results / "simgrid2" / "epochs")
    pd.testing.assert_frame_equal(epochs[cols].sort_values(key).reset_index(drop=True),
                                  other[cols].sort_values(key).reset_index(drop=True))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_asha_prunes_simulated_search_trials(write_study, tmp_path):
    study = sim_study("simasha", grid=None, seeds=[1],
                      search={"sampler": "tpe", "seed": 0, "n_trials": 16,
                              "params": {"train.lr": {"type": "loguniform", "low": 1e-5, "high": 3e-2},
                                         "loss.distill_weight": {"type": "uniform", "low": 0.0, "high": 1.0}}},
                      scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results)]) == 0
    trials = pd.read_parquet(results / "simasha" / "trials")
    assert len(trials) == 16
    pruned = trials[trials["status"] == "pruned"]
    assert len(pruned) >= 4 and (pruned["epochs_run"] < 6).all() and (trials["status"] == "completed").any()


def test_a_dry_run_of_a_simulated_study_says_so_and_times_no_training_step(write_study, tmp_path, capsys,
                                                                            ray_init_calls):
    spec = write_study(sim_study("simdry"))
    assert main([str(spec), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED (simulate: true): 20 trials" in out and "s/epoch" not in out
    assert ray_init_calls == [] and not (tmp_path / "r").exists()
