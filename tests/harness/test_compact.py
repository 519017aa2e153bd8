"""Compaction (issue 15): per-trial parts folded into one file per table, exactly once even when killed at
any step, read by the sink and by reports with one precedence rule (a trial's part wins over its compacted
rows), and a damaged compacted file costing only the trials it really lost. Ray-less: rows are written
through the sink as the trainable writes them."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoe.outputs import EpochRecord, RouterRecord
from emoe_schema import TABLES
from emoe_schema.layout import COMPACTED, list_table, read_table_files
from harness.compact import main
from harness.results.compact import compact_study
from harness.results.quarantine import damaged_files, quarantine_damaged
from harness.results.rows import (
    epoch_row,
    epochs_table,
    predictions_table,
    router_table,
    trial_schema,
    trial_table,
)
from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.load import parse_spec
from harness.study.plan import Plan, build_plan
from harness.tune.resume import study_state
from reports.load import ResultsError, load_study, read_table
from reports.predictions import load_predictions
from tests.harness.conftest import REPO, tiny_study

N_SAMPLES = 5


@pytest.fixture(scope="module")
def plan() -> Plan:
    spec = parse_spec(tiny_study(name="c", grid={"loss.distill_weight": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]},
                                 seeds=[1, 2]))
    return build_plan(spec, load_study_data(spec.data))


def write_trial(store: ResultStore, trial, *, status: str = "completed", attempts: int = 1, mae: float = 0.5) -> None:
    """A trial's four files as the trainable writes them (a failed trial has epochs but no per-sample files)."""
    rng = np.random.default_rng(abs(hash((trial.trial_id, attempts))) % 2**32)
    records = [EpochRecord(epoch=e, train={"loss": 1.0 / e, "task": 0.5}, valid={"loss": mae + 1 / e, "mae": mae + 1 / e},
                           lr=1e-3, improved=True, best_epoch=e, test={"mae": mae}, router_mean={"w_l": 0.5},
                           time_s=0.1) for e in (1, 2)]
    store.write_table("epochs", trial.trial_id, epochs_table(trial, [epoch_row(r) for r in records], label_kind="mosi"))
    if status == "completed":
        rec = RouterRecord(weights=rng.dirichlet([1, 1, 1], N_SAMPLES).astype(np.float32),
                           preds=rng.normal(size=N_SAMPLES).astype(np.float32), labels=np.arange(N_SAMPLES) - 2.0)
        store.write_table("router", trial.trial_id, router_table(trial, rec))
        store.write_table("predictions", trial.trial_id, predictions_table(trial, {"valid": rec, "test": rec}))
    now = datetime(2026, 11, 30, tzinfo=UTC)
    store.write_table("trials", trial.trial_id, trial_table(
        trial, label_kind="mosi", status=status, error=None if status == "completed" else "RuntimeError: x",
        best_epoch=2, epochs_run=2, objective=mae, valid={"mae": mae, "loss": mae}, test={"mae": mae},
        time_total_s=1.0, time_per_epoch_s=0.5, started_at=now, finished_at=now, cpus=1, gpus=0, node="h",
        node_id=None, attempts=attempts, code_version="0", data="synthetic"))
    store.write_run(trial.trial_id, {"attempts": attempts})


def make_study(root: Path, plan: Plan, failed: int = 3) -> ResultStore:
    store = ResultStore(root, "c")
    store.create("name: c\n", {"schema_version": 1, "study": "c", "kind": "grid", "varied": ["loss.distill_weight"],
                                "objective": {"metric": "valid_mae", "mode": "min"}, "status": "finished"})
    for i, trial in enumerate(plan.trials):
        write_trial(store, trial, status="failed" if i < failed else "completed", mae=0.4 + i / 100)
    return store


def snapshot(store: ResultStore) -> dict[str, pd.DataFrame]:
    """Every table as reports and the sink read it."""
    study = load_study(store.dir)
    return {"trials": study.trials, "epochs": study.epochs, "router": study.router,
            "predictions": load_predictions(study), "sink": store.read_trials()}


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name].reset_index(drop=True), b[name].reset_index(drop=True), obj=name)


def test_compaction_gives_the_same_frames_as_the_per_trial_files_in_one_file_per_table(tmp_path, plan):
    store = make_study(tmp_path, plan)
    before = snapshot(store)
    tid = plan.trials[5].trial_id
    row = store.read_trial(tid)
    assert len(before["trials"]) == len(plan.trials) == 12
    report = compact_study(store, row_group_rows=10)
    assert report.parts == 12 + 12 + 9 + 9 and report.rows == 12 + 24 + 45 + 90 and report.bytes > 0
    for table in TABLES:
        assert sorted(p.name for p in store.table_dir(table).iterdir()) == [COMPACTED]
    assert_same(before, snapshot(store))
    assert pq.read_schema(store.compacted_path("trials")) == trial_schema("mosi")  # the schema, not a guess
    meta = pq.ParquetFile(store.compacted_path("predictions")).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10] * 9  # sized row groups
    # external readers without the project: the folder is one file now
    assert len(pd.read_parquet(store.table_dir("epochs"))) == 24
    # the sink's per-trial readers see compacted rows
    assert store.trial_ids() == {t.trial_id for t in plan.trials}
    assert store.status(tid) == "completed" and store.status(plan.trials[0].trial_id) == "failed"
    assert store.read_trial(tid) == row
    assert study_state(plan, store).counts == {"completed": 9, "failed": 3}


def test_compaction_is_idempotent_and_the_cli_says_what_it_did(tmp_path, plan, capsys):
    store = make_study(tmp_path, plan)
    assert main([str(store.dir)]) == 0
    assert "42 part files folded" in capsys.readouterr().out
    stat = store.compacted_path("epochs").stat()
    before = snapshot(store)
    assert main([str(store.dir)]) == 0
    assert "0 part files folded" in capsys.readouterr().out
    assert store.compacted_path("epochs").stat().st_ino == stat.st_ino  # nothing rewritten
    assert_same(before, snapshot(store))


def test_a_trial_retried_after_compaction_wins_until_the_next_compaction_folds_it_in(tmp_path, plan):
    store = make_study(tmp_path, plan)
    compact_study(store)
    failed = plan.trials[0]
    assert study_state(plan, store).failed[:1] and store.status(failed.trial_id) == "failed"
    write_trial(store, failed, status="completed", attempts=2, mae=0.3)  # --retry-failed ran it again
    for reading in range(2):  # with the part beside the compacted file, then folded in
        assert store.status(failed.trial_id) == "completed" and store.read_trial(failed.trial_id)["attempts"] == 2
        rows = snapshot(store)
        assert rows["trials"]["trial_id"].is_unique and len(rows["trials"]) == 12
        assert rows["trials"].set_index("trial_id").loc[failed.trial_id, "attempts"] == 2
        assert len(rows["epochs"]) == 24 and len(rows["router"]) == 10 * N_SAMPLES
        assert list(rows["trials"]["trial_id"]) == sorted(rows["trials"]["trial_id"])  # same order either way
        assert study_state(plan, store).counts == {"completed": 10, "failed": 2}
        if reading == 0:
            assert compact_study(store).parts == 4
    assert list_table(store.table_dir("trials")).parts == {}


CRASH = """
import os, sys
import harness.results.compact as c
step, nth = sys.argv[2], int(sys.argv[3])
seen = []
def die(name):
    seen.append(name)
    if seen.count(step) == nth:
        os._exit(9)
c._step = die
c.compact_study(c.ResultStore(sys.argv[1], "c"), row_group_rows=5, batch=5)  # streamed: small row groups, batches
"""


@pytest.mark.parametrize(("step", "nth"), [("written", 1), ("committed", 1), ("deleted", 1), ("deleted", 13),
                                           ("written", 3), ("committed", 4), ("row group", 1), ("row group", 7)])
def test_a_compaction_killed_at_any_step_leaves_every_row_exactly_once_and_the_next_one_finishes(
        tmp_path, plan, step, nth):
    store = make_study(tmp_path, plan)
    before = snapshot(store)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path), step, str(nth)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert_same(before, snapshot(store))  # killed: readers still see each row once
    report = compact_study(store)  # the next compaction completes it (and drops a killed one's temporary file)
    assert report.parts > 0
    for table in TABLES:
        assert sorted(p.name for p in store.table_dir(table).iterdir()) == [COMPACTED]
    assert_same(before, snapshot(store))


def test_a_reader_that_listed_the_parts_before_a_compaction_still_reads_each_row_once(tmp_path, plan):
    store = make_study(tmp_path, plan)
    listed = list_table(store.table_dir("epochs"))
    expected = read_table_files(listed, on_damaged=lambda p, e: None)
    compact_study(store)  # the parts it listed are gone; the compacted file read after them holds their rows
    assert read_table_files(listed, on_damaged=lambda p, e: None).equals(expected)


def test_a_study_being_run_is_not_compacted(tmp_path, plan, capsys):
    store = make_study(tmp_path, plan)
    with store.lock():
        assert main([str(store.dir)]) == 2
    assert "a driver is running this study" in capsys.readouterr().err
    assert not store.compacted_path("trials").exists() and len(list_table(store.table_dir("trials")).parts) == 12


@pytest.mark.parametrize("case", ["missing", "file", "not a study", "a results root"])
def test_the_cli_refuses_what_is_not_a_study_directory_and_creates_nothing(tmp_path, plan, capsys, case):
    make_study(tmp_path / "results", plan)
    path = {"missing": tmp_path / "nope", "file": tmp_path / "results" / "c" / "spec.yaml",
            "not a study": tmp_path / "results" / "c" / "trials", "a results root": tmp_path / "results"}[case]
    listing = sorted(tmp_path.rglob("*"))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert ("give one of them" in err) == (case == "a results root")
    assert sorted(tmp_path.rglob("*")) == listing


def test_a_file_that_is_not_a_trials_part_is_left_alone(tmp_path, plan, capsys):
    store = make_study(tmp_path, plan)
    copy = store.table_dir("trials") / "copy.parquet"
    copy.write_bytes(store.table_path("trials", plan.trials[4].trial_id).read_bytes())
    compact_study(store)
    assert copy.exists() and "not a trial's file" in capsys.readouterr().err
    with pytest.raises(ResultsError, match="duplicated trial ids"):  # a reader still sees the copy
        load_study(store.dir)


def _flip_row_group(path: Path, group: int) -> None:
    """Change bytes inside one row group's first column chunk (its page checksum no longer matches)."""
    col = pq.ParquetFile(path).metadata.row_group(group).column(0)
    raw = bytearray(path.read_bytes())
    at = col.data_page_offset + col.total_compressed_size - 4
    raw[at:at + 2] = bytes(b ^ 0xFF for b in raw[at:at + 2])
    path.write_bytes(bytes(raw))


def test_a_damaged_compacted_file_costs_only_the_trials_of_its_unreadable_row_group(tmp_path, plan):
    store = make_study(tmp_path, plan, failed=0)
    before = snapshot(store)
    compact_study(store, row_group_rows=4)  # trials: 3 row groups of 4 trials
    compacted = store.compacted_path("trials")
    _flip_row_group(compacted, 1)
    damaged = compacted.read_bytes()
    with pytest.raises(ResultsError, match=r"compacted\.parquet: damaged"):  # never a quietly smaller report
        load_study(store.dir)
    assert list(damaged_files(store)) == [compacted]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        info = quarantine_damaged(store, store.read_info())
    assert info["status"] == "incomplete" and "moved the files of 4 damaged trial(s)" in err.getvalue()
    lost = sorted(t.trial_id for t in plan.trials)[4:8]
    after = snapshot(store)
    assert sorted(after["trials"]["trial_id"]) == sorted(set(before["trials"]["trial_id"]) - set(lost))
    for table in ("epochs", "router", "predictions"):  # a lost trial's rows leave every table
        assert not set(after[table]["trial_id"]) & set(lost)
        assert len(after[table]) == len(before[table]) * 8 // 12
    (folder,) = (store.dir / "quarantine").iterdir()
    assert (folder / "trials" / COMPACTED).read_bytes() == damaged  # kept byte for byte
    assert len(pd.read_parquet(folder / "epochs" / "compacted-rows.parquet")) == 4 * 2
    assert all(store.awaiting_rerun(t) for t in lost) and study_state(plan, store).missing == 4
    assert damaged_files(store) == {}


def test_a_compacted_file_without_a_readable_footer_sends_every_trial_to_run_again(tmp_path, plan, capsys):
    store = make_study(tmp_path, plan)
    compact_study(store)
    path = store.compacted_path("router")
    path.write_bytes(path.read_bytes()[:-100])  # truncated: no footer
    with contextlib.redirect_stderr(io.StringIO()):
        quarantine_damaged(store, store.read_info())
    assert store.trial_ids() == set() and study_state(plan, store).missing == 12
    (folder,) = (store.dir / "quarantine").iterdir()
    assert (folder / "router" / COMPACTED).exists() and "could not be read at all" in (folder / "reasons.txt").read_text()
    assert f"{plan.trials[3].trial_id}: a compacted file" in (folder / "reasons.txt").read_text()
    assert len(pd.read_parquet(folder / "trials" / "compacted-rows.parquet")) == 12  # kept, not deleted


def test_a_damaged_part_of_a_compacted_study_takes_its_trials_compacted_rows_aside_too(tmp_path, plan):
    store = make_study(tmp_path, plan)
    compact_study(store)
    tid = plan.trials[0].trial_id
    write_trial(store, plan.trials[0], status="completed", attempts=2)
    store.table_path("epochs", tid).write_bytes(b"garbage" * 10)
    with contextlib.redirect_stderr(io.StringIO()):
        quarantine_damaged(store, json.loads(store.info_path.read_text()))
    assert tid not in store.trial_ids() and store.read_trial(tid) is None  # no older row shows through
    assert tid not in set(read_table(store.table_dir("epochs"))["trial_id"])


@pytest.mark.ray
@pytest.mark.slow
def test_resume_and_retry_failed_after_compaction_run_what_the_compacted_rows_say(
        ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    import harness.results.compact as compact
    from harness.results.compact import write_compacted
    from harness.results.salvage import extract_trials
    from harness.run import main as run

    monkeypatch.setattr(compact, "AUTO_COMPACT_TRIALS", 1)  # compact this small study when its run ends
    spec_path = write_study(tiny_study(name="cr", grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1]))
    results = tmp_path / "results"
    args = [str(spec_path), "--results", str(results), "--address", ray_cluster.address]
    assert run(args) == 0
    assert "compacted cr:" in capsys.readouterr().out
    store = ResultStore(results, "cr")
    assert all(not list_table(store.table_dir(t)).parts for t in TABLES) and store.compacted_path("router").exists()
    first = store.read_trials().set_index("trial_id")
    failed, missing, kept = sorted(first.index)

    # one trial's compacted row says failed; another trial's rows are gone from every table
    rows = pq.read_table(store.compacted_path("trials")).to_pandas()
    rows.loc[rows["trial_id"] == failed, "status"] = "failed"
    write_compacted(store.table_dir("trials"),
                    pa.Table.from_pandas(rows, preserve_index=False).cast(trial_schema("mosi")))
    extract_trials(store, {missing}, tmp_path / "aside")
    assert run([*args, "--resume", "--no-compact"]) == 0  # runs the missing trial only
    out = capsys.readouterr().out
    assert "add --retry-failed" not in out and "compacted cr:" not in out
    assert set(list_table(store.table_dir("trials")).parts) == {missing}  # its new part, beside the compacted file
    assert run([*args, "--resume"]) == 0 and "add --retry-failed" in capsys.readouterr().out
    assert run([*args, "--resume", "--retry-failed"]) == 0  # the failed one runs again: its part wins
    assert "compacted cr:" in capsys.readouterr().out
    after = store.read_trials().set_index("trial_id")
    assert sorted(after.index) == sorted(first.index) and (after["status"] == "completed").all()
    assert after.loc[kept, "finished_at"] == first.loc[kept, "finished_at"]  # not run again
    assert after.loc[failed, "attempts"] == 2 and after.loc[failed, "finished_at"] > first.loc[failed, "finished_at"]
    assert after.loc[missing, "finished_at"] > first.loc[missing, "finished_at"]
    study = load_study(store.dir)
    assert sorted(study.router["trial_id"].unique()) == sorted(first.index)
    assert study.epochs.groupby("trial_id").size().to_dict() == {t: 2 for t in first.index}  # each epoch once
    assert all(not list_table(store.table_dir(t)).parts for t in TABLES)


def test_a_report_builds_from_a_compacted_study_with_the_same_tables(tmp_path):
    from reports.build import build_report
    from tests.reports.conftest import write_ablation

    study_dir = write_ablation(tmp_path / "results" / "ablation")
    build_report(study_dir, out=tmp_path / "before", formats=("png",))
    report = compact_study(ResultStore(tmp_path / "results", "ablation"))
    assert report.parts > 0 and all(not list_table(study_dir / t).parts for t in TABLES)
    build_report(study_dir, out=tmp_path / "after", formats=("png",))
    tables = sorted(p.relative_to(tmp_path / "before") for p in (tmp_path / "before" / "tables").glob("*")
                    if p.suffix != ".json")
    assert tables and tables == sorted(p.relative_to(tmp_path / "after") for p in (tmp_path / "after" / "tables").glob("*")
                                       if p.suffix != ".json")
    for name in tables:
        assert (tmp_path / "after" / name).read_text() == (tmp_path / "before" / name).read_text(), name


def test_the_end_of_a_run_compacts_only_a_study_with_many_trial_files_and_a_failure_only_warns(
        tmp_path, plan, capsys, monkeypatch):
    import harness.results.compact as compact
    from harness.run import _compact, parse_args

    assert parse_args(["s.yaml", "--no-compact"]).no_compact and not parse_args(["s.yaml"]).no_compact
    store = make_study(tmp_path, plan)
    _compact(store)  # 12 trials: below the threshold, one file per trial stays
    assert not store.compacted_path("trials").exists() and capsys.readouterr().out == ""
    monkeypatch.setattr(compact, "AUTO_COMPACT_TRIALS", 12)
    before = snapshot(store)
    write_trial(store, plan.trials[0], attempts=2)
    store.compacted_path("epochs").write_bytes(b"damaged")  # a table that cannot be compacted as it is
    _compact(store)
    captured = capsys.readouterr()
    assert "warning: compaction failed" in captured.err and "per-trial files are intact" in captured.err
    assert store.compacted_path("trials").exists()  # the tables before the damaged one were compacted
    assert len(list_table(store.table_dir("epochs")).parts) == 12  # the damaged table's parts untouched
    store.compacted_path("epochs").unlink()
    after = snapshot(store)
    assert after["trials"].set_index("trial_id").loc[plan.trials[0].trial_id, "attempts"] == 2
    assert len(after["epochs"]) == len(before["epochs"])
