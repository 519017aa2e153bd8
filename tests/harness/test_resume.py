"""Driver crash and --resume: kill ``python -m harness.run`` (SIGKILL) mid-study, resume it, and find every
planned trial exactly once, finished trials not run again, and no duplicated epochs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.study.data import load_study_data
from harness.study.load import load_spec
from harness.study.plan import build_plan
from tests.harness.conftest import REPO, sigkill_when, tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _count(path: Path, pattern: str) -> int:
    return len(list(path.glob(pattern))) if path.exists() else 0


def test_killed_study_resumes_with_no_duplicated_and_no_missing_trials(write_study, tmp_path):
    study = tiny_study(name="resume", grid={"loss.distill_weight": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}, seeds=[1],
                       checkpoint_min_interval_s=0)
    study["base"]["train"]["max_epochs"] = 6
    spec_path = write_study(study)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.run", str(spec_path), "--results", str(results), "--num-cpus", "1"]
    root = results / "resume"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # kill once two trials are recorded and a third has started (it then resumes from its checkpoint)
        sigkill_when(proc, lambda: _count(root / "trials", "*.parquet") >= 2 and _count(root / ".runs", "*.json") >= 3)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):  # Ray's own processes of the killed run, if any remain
            os.killpg(proc.pid, signal.SIGKILL)
    before = pd.read_parquet(root / "trials").set_index("trial_id")
    assert 2 <= len(before) < 6

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_parquet(root / "trials").set_index("trial_id")
    spec = load_spec(spec_path)
    planned = {t["trial_id"] for t in build_plan(spec, load_study_data(spec.data)).trials}
    assert set(after.index) == planned and after.index.is_unique  # none missing, none duplicated
    assert (after["status"] == "completed").all()
    for tid, row in before.iterrows():  # finished before the crash: not run again
        assert after.loc[tid, "finished_at"] == row["finished_at"] and after.loc[tid, "attempts"] == 1
    assert after["attempts"].max() <= 2
    epochs = pd.read_parquet(root / "epochs")
    per_trial = epochs.groupby("trial_id")["epoch"].apply(sorted)
    assert all(list(e) == [1, 2, 3, 4, 5, 6] for e in per_trial), per_trial
    assert "finished" in (root / "study.json").read_text()
