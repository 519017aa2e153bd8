"""The ``tracking:`` block: parsed and overridable, checked before Ray (exit 2, nothing created), and a
tracker that fails mid-study is a warning that leaves the study going (no Ray needed here)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from harness.results.rows import trial_table
from harness.results.sink import ResultStore
from harness.run import main
from harness.study.errors import SpecError
from harness.study.load import load_spec
from harness.study.params import FIELDS
from harness.study.tracking import TrackingSpec, preflight
from harness.study.trial import OPEN_DIMS, Trial, make_trial, resolve_point
from harness.tune.trackers import (
    MLflowTracker,
    epoch_metrics,
    run_name,
    run_params,
    run_tags,
    selected_metrics,
    trial_of,
)
from tests.harness.conftest import tiny_study


def test_the_block_parses_with_shorthands_and_set_overrides(write_study):
    spec = load_spec(write_study(tiny_study(tracking={"tensorboard": True})),
                     ["tracking.mlflow=true", "tracking.wandb.project=emoe", "tracking.wandb.mode=offline"])
    t = spec.tracking
    assert t is not None and t.tensorboard and t.mlflow is not None and t.mlflow.uri is None
    assert t.wandb is not None and t.wandb.project == "emoe" and t.wandb.mode == "offline"
    assert t.enabled == ["mlflow", "tensorboard", "wandb"]
    assert load_spec(write_study(tiny_study())).tracking is None


def test_unknown_keys_and_modes_are_spec_errors(write_study):
    with pytest.raises(SpecError) as err:
        load_spec(write_study(tiny_study(tracking={"mlfow": {}, "wandb": {"project": "p", "mode": "cloud"}})))
    text = str(err.value)
    assert "tracking.mlfow: unknown key" in text and "tracking.wandb.mode" in text


def test_a_missing_package_fails_before_anything_is_created(write_study, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    spec = write_study(tiny_study(tracking={"mlflow": {"uri": "http://127.0.0.1:9"},
                                            "wandb": {"project": "p", "mode": "offline"}}))
    results = tmp_path / "results"
    assert main([str(spec), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "tracking.mlflow: the mlflow package is not installed" in err
    assert "tracking.wandb: the wandb package is not installed" in err and "Traceback" not in err
    assert not results.exists()


def test_checking_a_local_mlflow_store_that_does_not_exist_creates_nothing(tmp_path, monkeypatch):
    # a dry run (or a study refused for another reason) created the store: an mlruns/ tree, a 1 MB database
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    sqlite, files = tmp_path / "db" / "mlflow.db", tmp_path / "files" / "mlruns"
    assert preflight(TrackingSpec.model_validate({"mlflow": {"uri": f"sqlite:///{sqlite}"}}), "s") is None
    with pytest.raises(SpecError, match="MLFLOW_ALLOW_FILE_STORE"):  # MLflow's own refusal is still reported
        preflight(TrackingSpec.model_validate({"mlflow": {"uri": files.as_uri()}}), "s")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    preflight(TrackingSpec.model_validate({"mlflow": {"uri": files.as_uri()}}), "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "ro").mkdir(mode=0o500)
    if not os.access(tmp_path / "ro", os.W_OK):  # (root may write anywhere)
        with pytest.raises(SpecError, match="is not a writable folder"):
            preflight(TrackingSpec.model_validate({"mlflow": {"uri": f"sqlite:///{tmp_path / 'ro' / 'x.db'}"}}), "s")


def test_an_unreachable_server_or_missing_uri_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a W&B key
    with pytest.raises(SpecError) as err:
        preflight(TrackingSpec.model_validate({"mlflow": {"uri": "http://127.0.0.1:9"},
                                               "wandb": {"project": "p"}}), "s")
    text = str(err.value)
    assert "cannot use the MLflow tracking store http://127.0.0.1:9" in text
    assert "online mode needs an API key" in text
    with pytest.raises(SpecError, match=r"tracking.mlflow.uri: required"):
        preflight(TrackingSpec.model_validate({"mlflow": True}), "s")
    preflight(TrackingSpec.model_validate({"tensorboard": True, "wandb": {"project": "p", "mode": "offline"}}),
              "s")


def _trial() -> Trial:
    """A planned trial as Tune's config carries it: a frozen ``Trial`` with its resolved configuration."""
    overrides = {"loss.distill_weight": 0.5, "model.fixed_weights": [0.2, 0.3, 0.5]}
    cfg = resolve_point({"model": {"d_model": 8}}, overrides, OPEN_DIMS, seed=3)
    return make_trial("s", "dw=0.5", overrides, cfg, data_key="k", seed_index=0)


_TRIAL = _trial()


def test_runs_get_the_trial_ids_and_the_trials_tables_config_columns():
    trial = _TRIAL
    params = run_params(trial)
    assert set(params) == set(FIELDS)  # every config column of trials/, nothing of Tune's config
    assert params["model.d_model"] == 8 and params["loss.distill_weight"] == 0.5 and params["train.seed"] == 3
    assert params["model.fixed_weights"] == "[0.2, 0.3, 0.5]"  # sequences as the table stores them
    row = trial_table(trial, label_kind="mosi", status="completed", error=None, best_epoch=1,
                      epochs_run=1, objective=0.5, valid={}, test={}, time_total_s=None, time_per_epoch_s=None,
                      started_at=None, finished_at=None, cpus=1, gpus=0, node=None, node_id=None, attempts=1,
                      code_version="x", data="k").to_pylist()[0]
    assert params == {k: row[k] for k in FIELDS}  # the run's parameters are its trials/ row's config
    assert run_tags(trial) == {"study": "s", "trial_id": trial.trial_id, "config_id": trial.config_id,
                               "variant": "dw=0.5", "seed": "3"}
    assert run_name(trial) == "dw=0.5-seed3"
    assert trial_of(_Trial({"trial": trial})) is trial
    assert trial_of(_Trial({"trial": {"trial_id": trial.trial_id}})) is None  # not a harness trial: skipped
    assert trial_of(_Trial({})) is None


def test_epoch_and_selected_metrics():
    step, metrics = epoch_metrics({"epoch": 2, "valid_mae": 0.7, "train_loss": 1.0, "w_l": 0.3, "lr": 1e-3,
                                   "test_mae": None, "valid_corr": float("nan"), "pid": 12, "config": {},
                                   "best_valid_mae": 0.6, "training_iteration": 2})
    assert step == 2 and metrics == {"valid_mae": 0.7, "train_loss": 1.0, "w_l": 0.3, "lr": 1e-3}
    assert epoch_metrics({"epoch": 2, "resumed_finished": True}) is None
    assert selected_metrics({"valid_mae": 0.5, "test_mae": None, "objective": 0.5, "best_epoch": 2,
                             "epochs_run": 3, "status": "completed"}) == {
        "selected/valid_mae": 0.5, "selected/objective": 0.5, "selected/best_epoch": 2.0,
        "selected/epochs_run": 3.0}


class _Trial:
    """What the trackers read of a Tune trial: its config (hashable by identity, like Tune's)."""

    def __init__(self, config: dict) -> None:
        self.config = config


def test_an_mlflow_store_that_becomes_unwritable_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store_dir = tmp_path / "mlruns"
    uri = store_dir.as_uri()
    store = ResultStore(tmp_path / "results", "s")
    tracker = MLflowTracker(store, tracking_uri=uri, experiment_name="exp")
    tracker.setup()
    trial = _Trial({"trial": _TRIAL})
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(1, [], trial, {"epoch": 1, "valid_mae": 0.9})
    (run,) = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name("exp").experiment_id])
    assert run.data.metrics == {"valid_mae": 0.9} and run.data.params["model.fixed_weights"] == "[0.2, 0.3, 0.5]"

    shutil.rmtree(store_dir)
    store_dir.write_text("not a directory any more")  # every write to the store now fails (even as root)
    tracker.on_trial_result(2, [], trial, {"epoch": 2, "valid_mae": 0.8})  # must not raise
    err = capsys.readouterr().err
    assert err.count("warning: tracking: mlflow failed") == 1 and "trials go on" in err
    tracker.on_trial_result(3, [], trial, {"epoch": 3, "valid_mae": 0.7})  # off now: silent
    tracker.on_trial_complete(3, [], trial)
    assert capsys.readouterr().err == ""
    assert Path(store_dir).is_file()


def test_a_resumed_trial_continues_its_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    store = ResultStore(tmp_path / "results", "s")
    store.create("name: s\n", {"study": "s", "created_at": "2026-11-30T10:00:00+00:00"})
    first = MLflowTracker(store, tracking_uri=uri, experiment_name="exp")
    first.setup()
    trial = _Trial({"trial": _TRIAL})
    first.on_trial_start(0, [], trial)
    first.on_trial_result(1, [], trial, {"epoch": 1, "valid_mae": 0.9})  # then the driver dies
    second = MLflowTracker(store, tracking_uri=uri, experiment_name="exp")  # --resume: Tune restores it
    second.setup()
    restored = _Trial({"trial": _TRIAL})
    second.on_trial_start(0, [], restored)
    second.on_trial_result(2, [], restored, {"epoch": 2, "valid_mae": 0.8})
    second.on_trial_complete(2, [], restored)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_mae")] == [1, 2]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "unknown"  # no trials/ row here
    other = MLflowTracker(ResultStore(tmp_path / "elsewhere", "s"), tracking_uri=uri, experiment_name="exp")
    other.setup()
    other.on_trial_start(0, [], _Trial({"trial": _TRIAL}))  # same study name, other results: its own run
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 2
    # the folder deleted and the study run again from scratch (same trial ids): new runs, not the old ones
    # continued (their epochs were appended to the old runs: steps [1, 2, 1, 2])
    store.write_info({"study": "s", "created_at": "2026-11-30T11:00:00+00:00"})
    again = MLflowTracker(store, tracking_uri=uri, experiment_name="exp")
    again.setup()
    again.on_trial_start(0, [], _Trial({"trial": _TRIAL}))
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 3


def test_runs_still_open_when_a_study_ends_are_ended_from_their_rows(tmp_path, monkeypatch):
    """Ctrl-C as a trial finished: its row said completed, but Tune never told the trackers, so its MLflow run
    stayed RUNNING forever (no status, no selected metrics), and an interrupted trial's too."""
    import dataclasses

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    store = ResultStore(tmp_path / "results", "s")
    store.create("name: s\n", {"study": "s", "created_at": "2026-11-30T10:00:00+00:00"})
    done, cut = _TRIAL, dataclasses.replace(_TRIAL, trial_id="0123456789ab", variant="cut")
    store.write_table("trials", done.trial_id, trial_table(
        done, label_kind="mosi", status="completed", error=None, best_epoch=1, epochs_run=2, objective=0.5,
        valid={"mae": 0.5}, test={}, time_total_s=None, time_per_epoch_s=None, started_at=None, finished_at=None,
        cpus=1, gpus=0, node=None, node_id=None, attempts=1, code_version="x", data="k"))
    tracker = MLflowTracker(store, tracking_uri=uri, experiment_name="exp")
    tracker.setup()
    trials = [_Trial({"trial": done}), _Trial({"trial": cut})]
    for t in trials:
        tracker.on_trial_start(0, [], t)
    tracker.on_experiment_end(trials)  # neither trial was completed by Tune
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("exp").experiment_id])}
    assert runs[done.trial_id].info.status == "FINISHED" and runs[done.trial_id].data.tags["status"] == "completed"
    assert runs[done.trial_id].data.metrics["selected/valid_mae"] == 0.5
    assert runs[cut.trial_id].info.status == "KILLED" and runs[cut.trial_id].data.tags["status"] == "interrupted"


def test_at_the_end_of_a_study_every_open_wandb_run_is_told_to_end_before_the_wait(monkeypatch, tmp_path):
    """A study stopped by Ctrl-C or its time budget ends its running trials without completing them, so their
    W&B runs never got END: the end of the study must send it, or each actor waits out the timeout and is
    killed with its run unwritten (the study then hung for ``EXIT_TIMEOUT_S``)."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

    from harness.tune.trackers import WandbTracker

    class Queue:
        def __init__(self) -> None:
            self.items: list[object] = []

        def put(self, item: object) -> None:
            self.items.append(item)

    tracker = WandbTracker(ResultStore(tmp_path, "s"), project="p", group="s", mode="offline")
    tracker._trial_queues = {"running": Queue(), "ended": Queue()}
    tracker._trial_queues["ended"].items.append((_QueueItem.END, None))  # completed: already told
    seen: list[list[object]] = []
    monkeypatch.setattr(WandbLoggerCallback, "on_experiment_end",
                        lambda self, *a, **k: seen.append([q.items[-1] for q in self._trial_queues.values()]))
    tracker.on_experiment_end(trials=[])
    assert seen == [[(_QueueItem.END, None), (_QueueItem.END, None)]]  # every run told to end, then the wait
