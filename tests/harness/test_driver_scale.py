"""What keeps the driver's cost per trial flat as studies grow (bench/scale.py, bench/README.md "Scale").

Behaviour, not timing: a grid's trials reach Tune through a searcher, in plan order, each once, never
copied (Tune's variant generation deep-copied the whole grid once per trial: O(N^2)); a settled trial's
status is read once; progress is flushed before the row that commits it; Tune gets the epoch's own
metrics only for trackers.
"""

from __future__ import annotations

import json

import pytest

from harness.study.data import load_study_data
from harness.study.plan import build_plan
from harness.study.spec import StudySpec
from tests.harness.conftest import tiny_study


def _trials():
    spec = StudySpec.model_validate(tiny_study(grid={"train.lr": [1e-4, 3e-4, 1e-3, 3e-3]}, seeds=[1, 2, 3]))
    return build_plan(spec, load_study_data(spec.data)).trials


def test_a_grids_planned_trials_are_suggested_once_each_in_plan_order_and_not_copied():
    from ray.tune.search import Searcher

    from harness.tune.planned import PlannedTrials

    trials = _trials()
    search = PlannedTrials(trials)
    suggested = [search.suggest(f"t{i}") for i in range(len(trials))]
    assert [s["trial"] for s in suggested] == trials and all(s["trial"] is t for s, t in zip(suggested, trials))
    assert search.suggest("one more") == Searcher.FINISHED and len(search) == 0


def test_saving_the_planned_searcher_writes_and_logs_nothing(tmp_path, monkeypatch):
    # Tune saves its searcher every few seconds; the base class tried save() and logged "save not
    # implemented for Searcher. Skipping save." in every grid and ablation run
    from harness.tune.planned import PlannedTrials

    def refuse(self, path):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing to save: a resume plans from the rows")

    monkeypatch.setattr(PlannedTrials, "save", refuse)
    PlannedTrials(_trials()).save_to_dir(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_progress_printer_takes_a_settled_trials_status_from_the_recorder_without_reading_its_row(tmp_path):
    from types import SimpleNamespace

    from harness.results.sink import ResultStore
    from harness.tune.progress import ProgressPrinter
    from harness.tune.recorder import ResultRecorder
    from harness.tune.trainable import TrialContext

    trial = _trials()[0]
    store = ResultStore(tmp_path, "t")
    reads: list[str] = []
    store.status = lambda tid: reads.append(tid)  # type: ignore[method-assign]  # counts row reads
    ctx = TrialContext(store=store, label_kind="mosi", objective="valid_mae", mode="min", cpus=1, gpus=0,
                       code_version="x", data="d")
    recorder = ResultRecorder(ctx)
    recorder.statuses[trial.trial_id] = "completed"  # as on_trial_complete leaves it
    printer = ProgressPrinter(store, total=1, objective="valid_mae", mode="min", status_of=recorder.status_of)
    printer._settle(SimpleNamespace(config={"trial": trial}, last_result={"objective": 0.8}), failed=False)
    assert printer.statuses == {trial.trial_id: "completed"} and printer.best is not None and reads == []


def test_progress_lines_keep_coming_while_no_trial_reports(tmp_path, monkeypatch):
    # trials waiting for resources (or a lost cluster) gave no line at all: lines came only on trial events
    import io
    import time

    from harness.results.sink import ResultStore
    from harness.tune.progress import ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(ResultStore(tmp_path, "t"), total=4, objective="valid_mae", mode="min",
                              interval_s=3600.0)
    monkeypatch.setattr(ProgressPrinter, "out", property(lambda self: out))
    printer.last_print = time.monotonic() - 60.0  # a minute since the last line, an hour between lines
    printer.on_step(1, [])
    assert out.getvalue() == ""
    printer.last_print = time.monotonic() - 3601.0  # the interval has passed: a line, though nothing reported
    printer.on_step(2, [])
    printer.on_step(3, [])  # and not again at once
    assert out.getvalue().count("0/4 done | 0 running | 4 pending") == 1


def test_progress_is_renamed_without_fsync_and_flushed_before_the_row_that_commits_it(tmp_path, monkeypatch):
    import os

    import pyarrow as pa

    from harness.results.sink import ResultStore
    from harness.tune.trainable import TrialContext, write_trial_row

    trial = _trials()[0]
    store = ResultStore(tmp_path, "t")
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    tid = trial.trial_id
    store.write_table("epochs", tid, pa.table({"epoch": [1]}), durable=False)
    store.write_run(tid, {"attempts": 1}, durable=False)
    assert synced == [] and store.read_run(tid) == {"attempts": 1}  # written and readable, nothing flushed
    ctx = TrialContext(store=store, label_kind="mosi", objective="valid_mae", mode="min", cpus=1, gpus=0,
                       code_version="x", data="d")
    write_trial_row(ctx, trial, status="pruned", error=None, best_epoch=1, epochs_run=1, valid={"mae": 0.9},
                    test={"mae": 1.0})
    files = [p for p in synced if not os.path.isdir(p)]
    epochs, runs = str(store.table_path("epochs", tid)), str(store.dir / ".runs" / f"{tid}.json")
    assert files.index(epochs) < len(files) - 1 and files.index(runs) < len(files) - 1
    assert files[-1].endswith(".tmp") and "/trials/" in files[-1]  # the row last, after what it summarises
    assert store.status(tid) == "pruned"


def test_a_trial_reports_its_epoch_row_to_tune_only_for_trackers(tmp_path, monkeypatch):
    """Tune keeps running statistics of every numeric metric of every trial for the whole study; the
    epoch's own metrics are reported only when a tracker logs them. The selected metrics (what a pruned
    trial's row is written from) always are. Checked on the simulated trainable, which reports as the real one."""
    import dataclasses

    from harness.results.sink import ResultStore
    from harness.study.data import load_study_data
    from harness.tune import simulated
    from harness.tune.runner import make_context
    from harness.tune.trainable import SELECTED

    spec = StudySpec.model_validate(tiny_study(simulate=True, grid={"train.lr": [1e-3]}, seeds=[1]))
    plan = build_plan(spec, load_study_data(spec.data))
    reports: list[dict[str, object]] = []
    monkeypatch.setattr(simulated.tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(simulated.tune, "get_checkpoint", lambda: None)
    for tracked in (False, True):
        store = ResultStore(tmp_path / str(tracked), "t")
        ctx = make_context(plan, store, "x")
        assert ctx.report_epoch_metrics is False  # the study has no tracking
        ctx = dataclasses.replace(ctx, report_epoch_metrics=tracked)
        reports.clear()
        simulated.simulated_trainable({"trial": plan.trials[0]}, data=plan.data.data, ctx=ctx)
        assert len(reports) == 2 and all("objective" in r and isinstance(r[SELECTED], str) for r in reports)
        assert json.loads(reports[-1][SELECTED])["valid"]["mae"] == pytest.approx(reports[-1]["objective"])
        assert not any(k.startswith("best_") and k != "best_epoch" for k in reports[-1])  # one text, not 22 numbers
        assert all(("w_l" in r) is tracked and ("valid_acc2" in r) is tracked for r in reports)


def test_tunes_trials_keep_no_metric_windows_and_share_the_trials_config_with_their_last_result():
    """LeanTrials on Tune's own Trial: running stats without the last-N deques, and the last result's
    config is the trial's object (not a copy per result), while every reported value stays readable."""
    from ray.tune.experiment import Trial as TuneTrial

    from harness.tune.lean import LeanTrials, drop_metric_windows

    desc = _trials()[0]
    trial = TuneTrial("emoe", stub=True, config={"trial": desc}, _setup_default_resource=False)
    lean = LeanTrials()
    lean.on_trial_start(0, [trial], trial)
    for epoch, objective in ((1, 0.9), (2, 0.7)):
        copy = {"trial": type(desc)(**{f: getattr(desc, f) for f in desc.__dataclass_fields__})}  # as unpickled
        result = {"objective": objective, "best_test_mae": objective + 0.1, "training_iteration": epoch,
                  "config": copy}
        lean.on_trial_result(0, [trial], trial, result=result)
        trial.update_last_result(result)
    stats = trial.metric_analysis["objective"]
    assert stats == pytest.approx({"max": 0.9, "min": 0.7, "avg": 0.8, "last": 0.7})  # no last-5/10-avg
    assert all(not windows for windows in trial.metric_n_steps.values())
    assert trial.last_result["config"] is trial.config and trial.last_result["best_test_mae"] == pytest.approx(0.8)
    assert not drop_metric_windows(object())  # a Ray without the setting: left as it is


def test_a_results_config_that_differs_from_the_trials_is_kept():
    from ray.tune.experiment import Trial as TuneTrial

    from harness.tune.lean import LeanTrials

    trial = TuneTrial("emoe", stub=True, config={"trial": _trials()[0]}, _setup_default_resource=False)
    other = {"trial": _trials()[1]}
    result = {"objective": 1.0, "config": other}
    LeanTrials().on_trial_result(0, [trial], trial, result=result)
    assert result["config"] is other


def test_a_pruned_trials_row_is_written_from_the_selected_metrics_of_its_last_report(tmp_path):
    """The recorder writes a pruned trial's row from Tune's last result: the selected metrics travel as one
    JSON text (``selected``) and come back as the row's valid_/test_ columns."""
    from types import SimpleNamespace

    from harness.results.sink import ResultStore
    from harness.tune.recorder import ResultRecorder
    from harness.tune.trainable import SELECTED, TrialContext, selected_text

    trial = _trials()[0]
    ctx = TrialContext(store=ResultStore(tmp_path, "t"), label_kind="regression", objective="valid_mae",
                       mode="min", cpus=1, gpus=0, code_version="x", data="d")
    last = {"epoch": 2, "best_epoch": 1, "objective": 0.7, "done": True,
            SELECTED: selected_text({"mae": 0.7, "corr": float("nan")}, {"mae": 0.75})}
    ResultRecorder(ctx).on_trial_complete(0, [], SimpleNamespace(config={"trial": trial}, last_result=last))
    row = ctx.store.read_trial(trial.trial_id)
    assert row is not None and row["status"] == "pruned" and row["epochs_run"] == 2 and row["best_epoch"] == 1
    assert row["valid_mae"] == pytest.approx(0.7) and row["test_mae"] == pytest.approx(0.75)
    assert row["objective"] == pytest.approx(0.7)


def test_the_scheduler_starts_the_newest_pending_trial_so_a_kept_actor_never_takes_a_starting_actors_trial():
    """Tune starts the trial the scheduler names and hands it a kept (finished) actor when one is free,
    killing that trial's own actor if it was still starting. Oldest-first named exactly those trials; the
    newest pending one is the trial just proposed, which has no actor yet. Paused trials resume oldest first.
    Only live trials are looked at (Tune's oldest-first rule scanned every trial of the study each step)."""
    from types import SimpleNamespace

    from ray.tune.experiment import Trial as TuneTrial

    from harness.tune.order import NewestFirstASHA, NewestFirstFIFO, NewestFirstMedian
    from harness.tune.runner import make_scheduler

    class FakeTrial:  # hashable by identity, as Tune's trials
        def __init__(self, tid: str, status: str) -> None:
            self.trial_id, self.status = tid, status

    trial = FakeTrial

    for scheduler in (NewestFirstFIFO(), NewestFirstASHA(metric="objective", mode="min"),
                      NewestFirstMedian(metric="objective", mode="min")):
        done = [trial(f"done{i}", TuneTrial.TERMINATED) for i in range(3)]
        a, b, c = trial("a", TuneTrial.PENDING), trial("b", TuneTrial.RUNNING), trial("c", TuneTrial.PENDING)
        live = {c, a, b}  # a set, as Tune keeps them

        def every_trial_is_not_looked_at() -> list[FakeTrial]:
            raise AssertionError("the scheduler must look at live trials only")

        controller = SimpleNamespace(get_live_trials=lambda live=live: live, get_trials=every_trial_is_not_looked_at,
                                     search_alg=None)
        for t in (*done, a, b, c):
            scheduler.on_trial_add(controller, t)
        assert scheduler.choose_trial_to_run(controller) is c  # proposed last: no actor of its own yet
        c.status = TuneTrial.RUNNING
        assert scheduler.choose_trial_to_run(controller) is a
        a.status = b.status = TuneTrial.PAUSED
        assert scheduler.choose_trial_to_run(controller) is a  # paused: oldest first, as Tune's FIFO
        a.status = TuneTrial.RUNNING
        assert scheduler.choose_trial_to_run(controller) is b
        b.status = TuneTrial.RUNNING
        assert scheduler.choose_trial_to_run(controller) is None
    spec = StudySpec.model_validate(tiny_study(scheduler={"name": "asha", "grace_period": 1}))
    assert isinstance(make_scheduler(build_plan(spec, load_study_data(spec.data))), NewestFirstASHA)
    spec = StudySpec.model_validate(tiny_study())
    assert isinstance(make_scheduler(build_plan(spec, load_study_data(spec.data))), NewestFirstFIFO)
