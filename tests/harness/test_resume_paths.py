"""Every interrupted study can be finished (issue 10, rows 1-5): a time budget that cut trials short, a
Ctrl-C, and failed trials retried. Faults are injected with events: the "time budget" runs out when the
first trial row appears, the SIGINT is sent once a trial has started. One shared multi-node runtime."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.run import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_NONE_COMPLETED, main
from harness.study.data import load_study_data
from harness.study.load import load_spec
from harness.study.plan import build_plan
from harness.tune.runner import StudyStopper
from tests.harness.conftest import (
    GPUS_PER_TRIAL,
    MISSING_DEVICE,
    REPO,
    signal_when_a_trial_starts,
    tiny_study,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _planned(spec_path: Path, overrides: list[str] | None = None) -> set[str]:
    spec = load_spec(spec_path, overrides or [])
    return {t["trial_id"] for t in build_plan(spec, load_study_data(spec.data)).trials}


def _rows(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "trials").set_index("trial_id")


def _hint(text: str) -> list[str]:
    """The argument list of the resume command printed in ``text`` (after ``harness.run``)."""
    line = next(ln for ln in text.splitlines() if "continue with:" in ln)
    words = shlex.split(line.split("continue with:", 1)[1])
    assert words[:3] == ["python", "-m", "harness.run"], line
    return words[3:]


def test_trials_cut_by_the_time_budget_run_on_resume_with_the_new_concurrency(
        ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    study = tiny_study(name="budget", grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1, 2],
                       checkpoint_min_interval_s=0, concurrency=None)  # as the cluster allows, then 1 on resume
    study["base"]["train"]["max_epochs"] = 3
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "budget"
    sets = ["--set", "time_budget_s=25", "--set", "description=a b"]  # a value that needs shell quoting
    # the budget "runs out" as soon as the first trial has its row (an event, not a clock)
    monkeypatch.setattr(StudyStopper, "budget_spent", lambda self: any((root / "trials").glob("*.parquet")))
    code = main([str(spec_path), "--results", str(results), "--address", ray_cluster.address, *sets])
    out = capsys.readouterr().out
    assert code == EXIT_INCOMPLETE, out
    before = _rows(root)
    planned = _planned(spec_path)
    assert 1 <= len(before) < len(planned)
    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "incomplete" and info["counts"] == before["status"].value_counts().to_dict()
    assert "the time budget ran out" in out
    hint = _hint(out)  # the full command: results root, every --set, the cluster
    assert hint[hint.index("--results") + 1] == str(results)
    assert "time_budget_s=25" in hint and "description=a b" in hint and ray_cluster.address in hint
    assert hint[-1] == "--resume"

    monkeypatch.undo()
    # resumed as the hint says, with a longer budget and one trial at a time
    code = main([*hint, "--set", "time_budget_s=600", "--set", "concurrency=1", "--progress-every", "0.01"])
    out = capsys.readouterr().out
    assert code == 0, out
    after = _rows(root)
    assert set(after.index) == planned and after.index.is_unique
    assert (after["status"] == "completed").all()
    for tid, row in before.iterrows():  # recorded before: not run again
        assert after.loc[tid, "finished_at"] == row["finished_at"]
    progress = [ln for ln in out.splitlines() if " running |" in ln]
    assert progress and not [ln for ln in progress if "2 running" in ln], progress
    assert f"{len(planned)}/{len(planned)} done" in out  # earlier rows count as done
    ran = after.drop(index=before.index).sort_values("started_at")
    assert (ran["started_at"].iloc[1:].to_numpy() >= ran["finished_at"].iloc[:-1].to_numpy()).all()
    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "finished" and info["counts"] == {"completed": len(planned)}

    # nothing left: a resume says so, from the rows, and starts nothing
    assert main([*hint]) == 0
    assert "nothing to resume" in capsys.readouterr().out


def test_a_study_whose_trials_all_failed_exits_non_zero_and_retry_failed_runs_them_again(
        ray_cluster, gpu_node, write_study, tmp_path, capsys):
    study = tiny_study(name="allfail", seeds=[1], max_failures=0, resources={"gpus": GPUS_PER_TRIAL})
    # a valid index of the trial's (logical) GPUs, but no machine has it: every trial raises at its start
    study["base"]["train"]["device"] = MISSING_DEVICE
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "allfail"
    args = [str(spec_path), "--results", str(results), "--address", ray_cluster.address]
    assert main(args) == EXIT_NONE_COMPLETED
    captured = capsys.readouterr()
    first = _rows(root)
    assert len(first) == 2 and (first["status"] == "failed").all() and (first["attempts"] == 1).all()
    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "finished" and info["counts"] == {"failed": 2}  # counts from the rows
    assert "2 of 2 trials failed" in captured.out and "`error` column of trials/" in captured.out
    assert captured.out.count(MISSING_DEVICE) >= 4  # each failed trial's last error line: when it fails, at the end
    assert "--retry-failed" in captured.err

    # --resume alone: nothing to run, says how to retry, still not a success; a study.json that lags
    # behind the rows (a driver that died after the last row) is set right from the rows
    (root / "study.json").write_text(json.dumps({**info, "status": "running", "counts": {}}))
    assert main([*args, "--resume"]) == EXIT_NONE_COMPLETED
    assert "add --retry-failed" in capsys.readouterr().out
    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "finished" and info["counts"] == {"failed": 2}
    assert _rows(root)["finished_at"].equals(first["finished_at"])

    assert main([*args, "--resume", "--retry-failed"]) == EXIT_NONE_COMPLETED
    again = _rows(root)
    assert set(again.index) == set(first.index) and (again["attempts"] == 2).all()  # each ran once more
    assert (again["finished_at"] > first["finished_at"]).all()


def test_ctrl_c_exits_130_with_the_full_resume_command_and_the_study_can_be_finished(write_study, tmp_path):
    """A local runtime (as a user starts it): also checks Ray's token warning and Tune's hint are gone."""
    study = tiny_study(name="sigint", grid={"loss.distill_weight": [0.0, 0.25, 0.5, 0.75, 1.0]}, seeds=[1],
                       checkpoint_min_interval_s=0)
    study["base"]["train"]["max_epochs"] = 4
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "sigint"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    cmd = [sys.executable, "-m", "harness.run", str(spec_path), "--results", str(results), "--num-cpus", "1"]
    proc, out, err = signal_when_a_trial_starts(cmd, root, signal.SIGINT, env=env)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Tuner.restore" not in out + err and "Token authentication" not in out + err
    hint = _hint(err)
    assert hint[hint.index("--results") + 1] == str(results) and "--num-cpus" in hint
    info = json.loads((root / "study.json").read_text())
    rows = _rows(root) if list((root / "trials").glob("*.parquet")) else pd.DataFrame({"status": []})
    assert info["status"] == "interrupted"
    assert info["counts"] == rows["status"].value_counts().to_dict()
    assert len(rows) < 5

    resumed = subprocess.run([sys.executable, "-m", "harness.run", *hint], cwd=REPO, capture_output=True,
                             text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _rows(root)
    assert set(after.index) == _planned(spec_path) and (after["status"] == "completed").all()
    assert json.loads((root / "study.json").read_text())["status"] == "finished"


def test_a_search_cut_by_the_time_budget_finishes_on_resume_with_every_configuration_told_once(
        ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    import optuna

    study = tiny_study(name="searchbudget", grid=None, seeds=[1, 2], concurrency=2, checkpoint_min_interval_s=0,
                       scheduler={"name": "fifo"},  # every trial to its end: each configuration gets a value
                       search={"sampler": "random", "seed": 0, "n_trials": 3,
                               "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}})
    study["base"]["train"]["max_epochs"] = 3
    results = tmp_path / "results"
    root = results / "searchbudget"
    args = [str(write_study(study)), "--results", str(results), "--address", ray_cluster.address]
    monkeypatch.setattr(StudyStopper, "budget_spent", lambda self: any((root / "trials").glob("*.parquet")))
    assert main(args) == EXIT_INCOMPLETE
    before = _rows(root)
    assert 1 <= len(before) < 6
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0, capsys.readouterr()
    after = _rows(root)
    assert len(after) == 6 and after.index.is_unique and (after["status"] == "completed").all()
    assert after.groupby("config_id")["seed"].apply(sorted).tolist() == [[1, 2]] * 3  # paired by seed
    for tid, row in before.iterrows():
        assert after.loc[tid, "finished_at"] == row["finished_at"]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(root / "optuna.journal")))
    trials = optuna.load_study(study_name="searchbudget", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    means = after.groupby("config_id")["objective"].mean().sort_values().tolist()
    assert sorted(t.value for t in trials) == pytest.approx(means)


def test_every_tune_trial_folder_names_its_trial_even_when_actors_are_reused(ray_cluster, write_study, tmp_path):
    """A resume finds a trial's checkpoints through the ``trial.json`` of its Tune folder: every folder has
    one, naming the trial Tune ran there (workers are reused across trials, so a worker must not name it)."""
    study = tiny_study(name="named", grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1, 2])
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results), "--address", ray_cluster.address]) == 0
    folders = sorted((results / "named" / "tune").glob("trial_*"))
    assert len(folders) == 6  # more trials than the cluster's 2 CPUs: actors were reused
    named = {json.loads((f / "trial.json").read_text())["trial_id"] for f in folders}
    assert named == set(_rows(results / "named").index)
