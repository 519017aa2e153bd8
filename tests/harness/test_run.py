"""Whole studies on Ray: a grid spread over a two-worker cluster, refusal to overwrite, ASHA pruning,
failed and diverged trials. One shared multi-node runtime (``ray_cluster``), tiny data, 2-4 epochs."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pandas as pd
import pytest

from harness.run import main
from tests.harness.conftest import GPUS_PER_TRIAL, MISSING_DEVICE, REPO, tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_grid_study_runs_on_both_workers_one_row_per_trial_and_refuses_to_overwrite(
        ray_cluster, write_study, tmp_path, capsys):
    results = tmp_path / "results"
    spec = write_study(tiny_study(name="grid", grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, concurrency=None))
    assert main([str(spec), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    study = results / "grid"
    trials = pd.read_parquet(study / "trials")
    assert len(trials) == 6 and (trials["status"] == "completed").all()
    assert trials.groupby("loss.distill_weight")["seed"].apply(sorted).tolist() == [[1, 2]] * 3
    assert trials["trial_id"].is_unique and (trials["attempts"] == 1).all()
    assert (trials["epochs_run"] == 2).all() and trials["test_mae"].notna().all()
    assert set(trials["node_id"]) == ray_cluster.worker_ids  # both worker nodes, never the 0-CPU head
    assert (trials["cpus"] == 1).all()
    epochs = pd.read_parquet(study / "epochs")
    assert len(epochs) == 12 and not epochs.duplicated(["trial_id", "epoch"]).any()
    router = pd.read_parquet(study / "router")
    assert set(router["trial_id"]) == set(trials["trial_id"]) and router["r_l"].notna().all()
    info = json.loads((study / "study.json").read_text())
    assert info["status"] == "finished" and info["varied"] == ["loss.distill_weight"]
    assert (study / "spec.yaml").exists()
    assert "best configuration (mean over seeds):" in out and "6/6 done" in out

    before = {p.name: p.stat().st_mtime_ns for p in (study / "trials").iterdir()}
    assert main([str(spec), "--results", str(results)]) == 2  # no --resume: refuse, touch nothing
    assert "add --resume" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (study / "trials").iterdir()} == before
    assert main([str(spec), "--results", str(results), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (study / "trials").iterdir()} == before


def test_asha_search_stops_some_trials_early_and_records_them_as_pruned(write_study, tmp_path):
    study = tiny_study(name="asha", grid=None, seeds=[1], concurrency=1,
                       search={"sampler": "random", "seed": 0, "n_trials": 6,
                               "params": {"train.lr": {"type": "loguniform", "low": 1e-5, "high": 3e-2}}},
                       scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    study["base"]["train"]["max_epochs"] = 4
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results)]) == 0
    trials = pd.read_parquet(results / "asha" / "trials")
    assert len(trials) == 6
    pruned = trials[trials["status"] == "pruned"]
    assert len(pruned) >= 1 and (trials["status"] == "completed").any()
    assert (pruned["epochs_run"] < 4).all() and pruned["objective"].notna().all()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(results / "asha" / "optuna.journal")))
    states = [t.state for t in optuna.load_study(study_name="asha", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(pruned)
    assert states.count(optuna.trial.TrialState.COMPLETE) == (trials["status"] == "completed").sum()


def test_failed_and_diverged_trials_are_recorded_and_the_study_goes_on(ray_cluster, gpu_node, write_study,
                                                                       tmp_path):
    """Run from a separate driver process that joins the cluster with ``--address``. The trials ask for the
    logical GPUs of ``gpu_node``, so the driver accepts a device that no machine has."""
    study = tiny_study(name="faults", grid=None, seeds=[1], max_failures=0, resources={"gpus": GPUS_PER_TRIAL},
                       ablation={"baseline": "ok", "variants": {
                           "ok": {},
                           "explode": {"train.lr": 1e30, "train.update_epochs": 1},  # non-finite loss at once
                           "no_gpu": {"train.device": MISSING_DEVICE, "train.lr": 2e-3},  # raises: no such device
                       }})
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(write_study(study)), "--results", str(results),
                           "--address", ray_cluster.address], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_parquet(results / "faults" / "trials").set_index("variant")
    assert set(trials["node_id"]) == {gpu_node}  # the only node with the GPUs a trial asks for
    assert trials.loc["ok", "status"] == "completed"
    assert trials.loc["explode", "status"] == "diverged"
    assert trials.loc["explode", "error"].startswith("diverged: non-finite")
    assert trials.loc["no_gpu", "status"] == "failed"
    assert MISSING_DEVICE in trials.loc["no_gpu", "error"]
    assert "CUDA is not available" in trials.loc["no_gpu", "error"] or "CUDA device(s) visible" in \
        trials.loc["no_gpu", "error"]


def test_trials_no_node_can_host_exit_2_before_anything_is_created(write_study, tmp_path, capsys):
    """Each worker node has one CPU: a trial asking for two, or for a GPU, would wait forever in Tune."""
    results = tmp_path / "results"
    for resources, asked in (({"cpus": 2}, "2 CPU and 0 GPU"), ({"cpus": 1, "gpus": 1}, "1 CPU and 1 GPU")):
        assert main([str(write_study(tiny_study(name="big", resources=resources))), "--results", str(results)]) == 2
        err = capsys.readouterr().err
        assert f"a trial asks for {asked}" in err and "largest: 1 CPU, 0 GPU on 3 node(s)" in err, err
        assert "Traceback" not in err
        assert not results.exists()


def test_checkpoints_are_spaced_by_the_minimum_interval(write_study, tmp_path):
    """Each epoch is due (checkpoint_every 1); an interval longer than the trials leaves none at all."""
    results = tmp_path / "results"
    for name, interval in (("every", 0), ("spaced", 3600)):
        study = tiny_study(name=name, grid=None, seeds=[1], checkpoint_every=1, checkpoint_min_interval_s=interval)
        study["base"]["train"]["max_epochs"] = 3
        assert main([str(write_study(study)), "--results", str(results)]) == 0
    every = sorted(p.name for p in (results / "every" / "tune").rglob("checkpoint_*") if p.is_dir())
    assert len(every) == 2  # after epochs 1 and 2; none after the last
    assert not [p for p in (results / "spaced" / "tune").rglob("checkpoint_*") if p.is_dir()]
    trials = pd.read_parquet(results / "spaced" / "trials")
    assert (trials["status"] == "completed").all() and (trials["epochs_run"] == 3).all()
