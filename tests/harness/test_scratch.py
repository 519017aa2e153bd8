"""Scratch checkpoints (the folder a trial writes for ``tune.report`` to copy) do not pile up in the system's
temp dir: one fixed folder per study and trial, emptied by the next attempt, removed after each report and
swept by the driver at the end of a run (an attempt killed while reporting cannot remove its own)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.load import parse_spec
from harness.study.plan import build_plan
from harness.tune import trainable as trainable_module
from harness.tune.trainable import TrialContext, clear_scratch, emoe_trainable, scratch_dir
from tests.harness.conftest import tiny_study


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir of this test's own, so other studies' scratch folders on this machine are not seen."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_a_killed_attempts_scratch_is_replaced_and_nothing_is_left(tmp_path, own_tmp, monkeypatch) -> None:
    spec = parse_spec(tiny_study(grid=None, seeds=[1]))
    plan = build_plan(spec, load_study_data(spec.data))
    store = ResultStore(tmp_path / "results", spec.name)
    store.create("", {})
    ctx = TrialContext(store=store, label_kind="mosi", objective="valid_mae", mode="min", cpus=1, gpus=0,
                       code_version="test", data="tiny")
    trial = plan.trials[0]
    leftover = scratch_dir(store, trial.trial_id)
    leftover.mkdir()
    (leftover / "state.pt").write_bytes(b"")  # what a kill in the middle of torch.save leaves
    seen: list[set[str]] = []

    def report(metrics, checkpoint=None):
        if checkpoint is not None:
            seen.append({p.name for p in Path(checkpoint.path).iterdir()})
            assert Path(checkpoint.path) == leftover and (leftover / "state.pt").stat().st_size > 0

    monkeypatch.setattr(trainable_module.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trainable_module.tune, "report", report)
    emoe_trainable({"trial": trial}, data=plan.data.data, ctx=ctx)
    assert seen and all(names == {"state.pt", "meta.json"} for names in seen)
    assert not list(own_tmp.glob("emoe-ckpt-*"))  # removed after every report
    assert store.status(trial.trial_id) == "completed"


def test_the_driver_sweeps_only_its_own_studys_scratch(tmp_path, own_tmp) -> None:
    mine, other = ResultStore(tmp_path, "mine"), ResultStore(tmp_path, "other")
    for store, tid in ((mine, "a" * 12), (mine, "b" * 12), (other, "a" * 12)):
        scratch_dir(store, tid).mkdir()
        (scratch_dir(store, tid) / "state.pt").write_bytes(b"x")
    assert scratch_dir(mine, "a" * 12) != scratch_dir(other, "a" * 12)
    assert clear_scratch(mine) == 2
    assert [p.name for p in own_tmp.iterdir()] == [scratch_dir(other, "a" * 12).name]
