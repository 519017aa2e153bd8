"""A whole study logged to the real tools at once, read back with each tool's own reader: MLflow (a local
file store, MlflowClient), TensorBoard (its event accumulator) and W&B (offline, no network, no key).
Runs, parameters and metric counts must equal the study's Parquet tables. The study has a stack of two
members and a trial alone, so both kinds of run (a Tune trial's own, a stack member's) are read back."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.run import main
from harness.study.params import FIELDS
from tests.harness.conftest import tiny_study


@pytest.mark.ray
@pytest.mark.slow
def test_a_study_appears_in_mlflow_tensorboard_and_wandb(ray_cluster, write_study, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind a flag
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    study = tiny_study(name="tracked", grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[7],
                       resources={"stack": 2},  # the first two trials are one stack, the third runs alone
                       tracking={"mlflow": {"uri": uri, "experiment": "emoe-tracked"}, "tensorboard": True,
                                 "wandb": {"project": "emoe-test", "mode": "offline"}})
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results)]) == 0
    assert "warning: tracking" not in capsys.readouterr().err
    sdir = results / "tracked"
    trials = pd.read_parquet(sdir / "trials").set_index("trial_id")
    epochs = pd.read_parquet(sdir / "epochs")
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    assert len(list((sdir / "tune").glob("trial_*"))) == 2  # one stack of two members, one trial alone

    # MLflow: one run per trial in the study's experiment, params = config columns, one point per epoch
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("emoe-tracked")
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(trials.index)
    for tid, run in runs.items():
        row, rows = trials.loc[tid], epochs[epochs["trial_id"] == tid].sort_values("epoch")
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
        assert run.data.tags["seed"] == "7" and run.data.tags["variant"] == row["variant"]
        assert run.data.tags["config_id"] == row["config_id"] and run.data.tags["study"] == "tracked"
        params = run.data.params
        assert params["loss.distill_weight"] == str(row["loss.distill_weight"])
        assert params["train.seed"] == "7" and "trial" not in params  # the EMOE config, not Tune's
        assert set(params) == set(FIELDS)  # every config column of the trials table, nothing else
        for column in ("valid_mae", "train_loss", "lr", "w_l"):
            history = client.get_metric_history(run.info.run_id, column)
            expected = rows[column].dropna()
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == rows.loc[expected.index, "epoch"].tolist()
            assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(expected.tolist())
        assert run.data.metrics["selected/valid_mae"] == pytest.approx(row["valid_mae"])
        assert run.data.metrics["selected/test_mae"] == pytest.approx(row["test_mae"])

    # TensorBoard: one event directory per trial; scalars per epoch and the selected metrics
    for tid in trials.index:
        acc = EventAccumulator(str(sdir / "tensorboard" / tid))
        acc.Reload()
        rows = epochs[epochs["trial_id"] == tid].sort_values("epoch")
        events = acc.Scalars("valid_mae")
        assert [e.step for e in events] == rows["epoch"].tolist()
        assert [e.value for e in events] == pytest.approx(rows["valid_mae"].tolist(), rel=1e-6)
        (selected,) = acc.Scalars("selected/valid_mae")
        assert math.isclose(selected.value, trials.loc[tid, "valid_mae"], rel_tol=1e-6)

    # W&B offline: one run directory per trial under the study. wandb keeps an offline run in one binary
    # log (its Python package no longer reads it back; `wandb sync` uploads it): look for what it must hold
    runs_dirs = sorted((sdir / "wandb").glob("offline-run-*"))
    assert len(runs_dirs) == 3
    seen = set()
    for d in runs_dirs:
        (log,) = d.glob("run-*.wandb")
        data = log.read_bytes()
        (tid,) = [t for t in trials.index if t.encode() in data]
        seen.add(tid)
        for needle in ("loss.distill_weight", "tracked", "valid_mae", "selected/valid_mae", "completed",
                       f"seed:{trials.loc[tid, 'seed']}"):
            assert needle.encode() in data, needle
    assert seen == set(trials.index)

    # provenance in study.json: code, packages, every node, the command and the data's fingerprint
    prov = json.loads((sdir / "study.json").read_text())["provenance"]
    assert prov["project"]["version"] and prov["packages"]["torch"] and prov["packages"]["ray"]
    assert {n["node_id"] for n in prov["nodes"]} >= ray_cluster.worker_ids
    assert all(n["machine"]["cpu"] for n in prov["nodes"])
    assert prov["data"]["kind"] == "synthetic" and prov["data"]["spec"]["seed"] == 0  # every generator field
    assert prov["command"] == shlex.join([Path(sys.executable).name, *sys.argv])  # this process's command line


# Runs Ray's W&B logging actor class in a fresh process, as the actor would (no Ray needed): its ``run``
# takes a trial's results from a queue until END, and prints the W&B processes this process still has
_ACTOR_RUN = textwrap.dedent("""
    import json, os, queue, sys
    from pathlib import Path
    from ray.air.integrations.wandb import _QueueItem
    from harness.tune.trackers import WandbTracker

    def children():
        me, alive = os.getpid(), []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == me and state != "Z":
                alive.append(int(stat.parent.name))
        return alive

    logdir = sys.argv[1]
    q = queue.Queue()
    for step in (1, 2, 3):
        q.put((_QueueItem.RESULT, {"valid_mae": 0.5 / step, "training_iteration": step}))
    q.put((_QueueItem.END, None))
    actor = WandbTracker._logger_actor_cls(logdir, q, [], [], project="emoe-test", mode="offline", dir=logdir,
                                           name="variant-seed7", config={"trial_id": "trial-0abc"})
    actor.run()
    print(json.dumps(children()), flush=True)
    os._exit(0)  # as Ray's kill of the actor: no finalizers, no atexit hooks
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc (Linux)")
def test_a_wandb_logging_actor_returns_only_once_its_run_is_written_out(tmp_path):
    """The driver kills a trial's W&B logging actor as soon as its ``run`` returns (and the end of a study
    waits for nothing else): so ``run`` must return only after W&B's service process has written the run
    out and exited. Ray's own actor returned from ``wandb.finish()`` with the service still running; the
    kill (or a graceful exit reported before the process's ``atexit`` teardown ended) could leave the run
    file without the trial's last records, which this test's study then missed under load. Nor may it leave
    W&B's temporary directories behind."""
    root = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    env.pop("WANDB_DIR", None)
    env.pop("WANDB_API_KEY", None)
    temp = tmp_path / "temp"  # the process's temporary directory: what W&B leaves there stays
    temp.mkdir()
    env["TMPDIR"] = str(temp)
    done = subprocess.run([sys.executable, "-c", _ACTOR_RUN, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # no W&B service process left running
    # W&B's media and artifact directories, made as it is imported, are gone although the process ended as a
    # killed actor does (every logging actor left two behind in /tmp)
    assert not [p.name for p in temp.iterdir() if "wandb" in p.name]
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    data = log.read_bytes()
    for needle in ("trial-0abc", "variant-seed7", "valid_mae", "training_iteration"):
        assert needle.encode() in data, needle
