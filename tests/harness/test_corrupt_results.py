"""A damaged result file (issue 10, row 8): named before anything starts, its trial's files moved to
``quarantine/`` (never deleted) so the resume runs the trial again; the summary and ``python -m reports``
name such a file and leave it out instead of failing on it."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import ray
import yaml

from harness.results.quarantine import damaged_files, quarantine_damaged
from harness.results.sink import ResultStore, read_parquet
from harness.run import main, parse_args, prepare
from tests.harness.conftest import REPO, tiny_study

IDS = ("0123456789ab", "abcdef012345", "fedcba987654")


def _table(tid: str, rows: int = 1) -> pa.Table:
    return pa.table({"trial_id": [tid] * rows, "status": ["completed"] * rows, "objective": [0.5] * rows})


def _flip_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 3
    raw[mid:mid + 8] = bytes(b ^ 0xFF for b in raw[mid:mid + 8])  # same size, bytes changed on disk
    path.write_bytes(bytes(raw))


def _zero_tail(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] + bytes(len(raw) - len(raw) // 2))  # same size, end overwritten


DAMAGE: dict[str, Callable[[Path], Any]] = {
    "end overwritten": _zero_tail,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "bytes flipped": _flip_middle,
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"not parquet at all" * 20),
    "another trial's rows": lambda p: p.write_bytes(p.with_name(f"{IDS[0]}.parquet").read_bytes()),
}


def _store(tmp_path: Path) -> ResultStore:
    store = ResultStore(tmp_path / "results", "t")
    store.create("name: t\n", {"study": "t", "status": "finished"})
    for tid in IDS:
        for table in ("trials", "epochs", "router"):
            store.write_table(table, tid, _table(tid, rows=1 if table == "trials" else 3))
    return store


@pytest.mark.parametrize("table", ["trials", "epochs", "router"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_file_moves_aside_with_its_trials_other_files(tmp_path, case, table):
    store = _store(tmp_path)
    bad = store.table_path(table, IDS[1])
    DAMAGE[case](bad)
    damaged_bytes = bad.read_bytes()
    found = damaged_files(store)
    assert list(found) == [bad], found

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        info = quarantine_damaged(store, store.read_info())
    assert str(bad) in err.getvalue() and "quarantine" in err.getvalue()
    assert info["status"] == "incomplete" == store.read_info()["status"]  # so the resume runs it again
    (target,) = (store.dir / "quarantine").iterdir()
    assert (target / table / bad.name).read_bytes() == damaged_bytes  # kept as it was, not deleted
    for other in ("trials", "epochs", "router"):  # the trial's files are one unit
        assert not store.table_path(other, IDS[1]).exists()
        assert (target / other / bad.name).exists()
    assert f"{table}/{bad.name}" in (target / "reasons.txt").read_text()
    assert store.trial_ids() == {IDS[0], IDS[2]} and damaged_files(store) == {}


def test_a_dry_run_names_the_damaged_file_and_moves_nothing(tmp_path):
    store = _store(tmp_path)
    bad = store.table_path("epochs", IDS[2])
    _flip_middle(bad)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        quarantine_damaged(store, store.read_info(), dry_run=True)
    assert str(bad) in err.getvalue() and "will move" in err.getvalue()
    assert bad.exists() and not (store.dir / "quarantine").exists()
    assert store.read_info()["status"] == "finished"


def test_readers_skip_a_damaged_row_and_say_so(tmp_path, capsys):
    store = _store(tmp_path)
    bad = store.table_path("trials", IDS[0])
    _flip_middle(bad)
    df = store.read_trials()  # what the end-of-study summary reads
    assert sorted(df["trial_id"]) == sorted(IDS[1:])
    assert str(bad) in capsys.readouterr().err
    assert bad.exists()  # reading for a summary moves nothing
    assert store.status(IDS[0]) is None  # a trial asks for its row: none, and the damaged file moves aside
    assert not bad.exists() and list((store.dir / "quarantine").rglob(bad.name))
    assert store.read_trial(IDS[1])["status"] == "completed"


def test_what_tune_reported_before_the_quarantine_is_not_written_back_as_a_row(tmp_path):
    from types import SimpleNamespace

    from harness.tune.recorder import record_outcome

    store = _store(tmp_path)
    DAMAGE["garbage"](store.table_path("router", IDS[1]))
    with contextlib.redirect_stderr(io.StringIO()):
        quarantine_damaged(store, store.read_info())
    ctx = SimpleNamespace(store=store)
    assert store.awaiting_rerun(IDS[1]) and not store.awaiting_rerun(IDS[0])
    assert record_outcome(ctx, SimpleNamespace(trial_id=IDS[1]), {"done": True, "objective": 0.5}, None) is None
    assert record_outcome(ctx, SimpleNamespace(trial_id=IDS[1]), {}, "an error from before") is None
    assert store.status(IDS[1]) is None
    store.write_run(IDS[1], {"attempts": 2})  # what a new start of the trial writes: the mark goes
    assert not store.awaiting_rerun(IDS[1])


def test_a_retry_that_dies_another_way_replaces_the_earlier_failed_row(tmp_path, monkeypatch):
    """--retry-failed ran a failed trial again and its worker died (no row of its own): the recorder kept the
    first attempt's row, so the study showed the old error, attempts and epochs while epochs/ and .runs
    told of the retry."""
    from types import SimpleNamespace

    from harness.tune import recorder

    store = _store(tmp_path)
    store.write_table("trials", IDS[1], pa.table({"trial_id": [IDS[1]], "status": ["failed"], "attempts": [1],
                                                   "error": ["RuntimeError: the first attempt's error"]}))
    written: list[str] = []
    monkeypatch.setattr(recorder, "write_row_from_metrics",
                        lambda ctx, trial, metrics, *, status, error: written.append(error))
    ctx, trial = SimpleNamespace(store=store), SimpleNamespace(trial_id=IDS[1])
    store.write_run(IDS[1], {"attempts": 1})  # the row is this attempt's own (written before it raised): kept
    assert recorder.record_outcome(ctx, trial, {}, "worker died") == "failed" and written == []
    store.write_run(IDS[1], {"attempts": 2})  # a later attempt died without a row: its error replaces it
    assert recorder.record_outcome(ctx, trial, {}, "worker died") == "failed" and written == ["worker died"]


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray must not start while the results are checked")

    monkeypatch.setattr(ray, "init", refuse)


def test_resume_names_and_moves_a_damaged_trial_before_ray_starts(tmp_path, no_ray):
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(name="t")))
    results = tmp_path / "results"
    store = _store(tmp_path)
    store.update_info(results_dir=str(store.dir))
    bad = store.table_path("trials", IDS[1])
    DAMAGE["truncated"](bad)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main([str(spec), "--results", str(results), "--resume", "--dry-run", "--no-measure"]) == 0
    assert str(bad) in err.getvalue() and bad.exists()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _, _, previous = prepare(parse_args([str(spec), "--results", str(results), "--resume"]))
    assert str(bad) in err.getvalue() and "run again" in err.getvalue()
    assert not bad.exists() and previous["status"] == "incomplete"


@pytest.mark.ray
@pytest.mark.slow
def test_a_study_with_a_damaged_trial_file_resumes_and_reports(ray_cluster, tmp_path):
    study = tiny_study(name="dmg", seeds=[1])
    study["base"]["train"]["max_epochs"] = 1
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(study))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.run", str(spec), "--results", str(results), "--address", ray_cluster.address,
           "--progress-every", "600"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    root = results / "dmg"
    bad = sorted((root / "trials").glob("*.parquet"))[0]
    _zero_tail(bad)
    damaged_bytes = bad.read_bytes()

    report = subprocess.run([sys.executable, "-m", "reports", str(root), "--format", "png", "-q"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert str(bad) in report.stderr and "left out" in report.stderr and "Traceback" not in report.stderr

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=600)
    out = resumed.stdout
    assert resumed.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    named = out.index(f"{bad}: damaged")
    assert named < out.index("study dmg: 2 trials ->")  # named before anything runs
    (moved,) = (root / "quarantine").rglob(f"trials/{bad.name}")
    assert moved.read_bytes() == damaged_bytes
    assert json.loads((root / "study.json").read_text())["status"] != "running"
    assert damaged_files(ResultStore(results, "dmg")) == {}
    trials = pd.concat([read_parquet(p).to_pandas() for p in (root / "trials").glob("*.parquet")])
    rows = trials.set_index("trial_id")
    if bad.stem in rows.index:  # run again: a fresh row, never one made from what Tune knew before
        assert rows.loc[bad.stem, "status"] == "completed"
        assert rows.loc[bad.stem, "finished_at"] > pd.Timestamp(moved.stat().st_mtime, unit="s", tz="UTC")
    else:  # not run yet by this resume: the study says so instead of claiming to be finished
        assert json.loads((root / "study.json").read_text())["status"] == "incomplete"
        assert "--resume" in out
    again = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]


def test_results_that_cannot_be_changed_stop_the_resume_with_a_message(tmp_path, monkeypatch):
    from harness.study.errors import StudyExistsError

    store = _store(tmp_path)
    bad = store.table_path("trials", IDS[0])
    DAMAGE["empty"](bad)

    def read_only(*args: Any) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr("harness.results.sink.os.replace", read_only)
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(StudyExistsError, match="cannot move the damaged"):
        quarantine_damaged(store, store.read_info())
    assert bad.exists() and store.read_info()["status"] == "finished"
