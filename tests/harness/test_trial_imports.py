"""A study's trial processes never import ``torch._dynamo`` (``emoe.dynamo_free``): the first ``torch.optim``
optimizer would, at 1-1.6 s of every fresh trial process on a 2-core machine and 4.6 s on an H200 host's
CPU. The driver runs in a fresh interpreter with its own local Ray, whose processes load a
``sitecustomize`` that writes down, per process, whether it imported torch and where it imported
``torch._dynamo`` from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.harness.conftest import REPO, tiny_study
from tests.harness.test_driver_imports import DRIVER

WATCH = r'''
import importlib.abc, os, sys, traceback

class _Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "torch._dynamo"):
            where = os.path.join(os.environ["EMOE_TEST_IMPORT_WATCH"], f"{os.getpid()}.{name}")
            with open(where, "w") as f:
                f.write(" ".join(sys.argv[:2]) + "\n" + "".join(traceback.format_stack()))
        return None

sys.meta_path.insert(0, _Watch())
'''


def _watched_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    hook, seen = tmp_path / "hook", tmp_path / "seen"
    hook.mkdir()
    seen.mkdir()
    (hook / "sitecustomize.py").write_text(WATCH)
    path = os.pathsep.join([str(hook), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "EMOE_TEST_IMPORT_WATCH": str(seen)}, seen


def test_the_watch_sees_a_dynamo_import(tmp_path):
    """The check below is not blind: a process that imports ``torch._dynamo`` leaves its file."""
    env, seen = _watched_env(tmp_path)
    subprocess.run([sys.executable, "-c", "import torch._dynamo"], env=env, check=True, timeout=300)
    assert len(list(seen.glob("*.torch._dynamo"))) == 1


@pytest.mark.ray
def test_a_stacked_grid_with_confirmation_and_report_imports_no_torch_in_the_driver_and_no_dynamo_in_trials(
        write_study, tmp_path):
    """Stacks (``stacked_trainable``) and a trial alone (the confirmation, ``emoe_trainable``), in processes of a
    local Ray started by the study: each trains, none imports ``torch._dynamo``; and the driver, which also
    builds the report, never imports torch (``tests/harness/test_driver_imports.py``), nor, for a study that
    tracks nothing, MLflow or W&B (Ray's integrations import them: 0.9 s of the driver's imports)."""
    study = tiny_study(name="lean", confirm={"top": 1, "seeds": [3]}, report=True, resources={"cpus": 1, "stack": 2})
    results = tmp_path / "results"
    env, seen = _watched_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(write_study(study)), "--results", str(results)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, proc.stderr[-4000:]
    trials = pd.read_parquet(results / "lean" / "trials")
    assert len(trials) == 5 and set(trials["status"]) == {"completed"}  # 4 tuning trials, 1 confirmation
    assert (results / "lean" / "report.md").is_file()
    assert out["torch"] is False and out["trackers"] == []
    trained = [p for p in seen.glob("*.torch") if "default_worker.py" in p.read_text().split("\n", 1)[0]]
    assert trained, "no Ray worker imported torch: the watch did not reach the trial processes"
    dynamo = {p.name: p.read_text()[-1500:] for p in seen.glob("*.torch._dynamo")}
    assert not dynamo, dynamo


@pytest.mark.ray
def test_workers_started_ahead_import_the_trial_code_before_a_trial_takes_them(write_study, tmp_path):
    """``EMOE_HARNESS_PRELOAD_WORKERS=2`` on a 2-CPU local runtime: both workers Ray starts ahead import the
    trial code as they start (``harness.tune.preload``), so the two trials, whichever worker their actor
    takes, find torch imported; no process imports it from a trainable. (Two trials on two slots: Tune
    starts exactly two actors. With more trials than slots it may start another for a later trial, under
    load, when a trial ends as the next is staged.)"""
    study = tiny_study(name="ahead", report=False, resources={"cpus": 1}, seeds=[1])
    results = tmp_path / "results"
    env, seen = _watched_env(tmp_path)
    env["EMOE_HARNESS_PRELOAD_WORKERS"] = "2"
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(write_study(study)), "--results", str(results),
                           "--num-cpus", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(pd.read_parquet(results / "ahead" / "trials")) == 2
    stacks = {p.name: p.read_text() for p in seen.glob("*.torch")}
    ahead = [name for name, text in stacks.items() if "harness/tune/preload.py" in text]
    late = {name: text[-1500:] for name, text in stacks.items() if "trainable" in text}
    assert 1 <= len(ahead) <= 2 and not late, (ahead, late)
