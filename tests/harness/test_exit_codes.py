"""Options that cannot work exit 2 before anything starts; the exit status rule; a failed trial's error
text comes back to the driver even when Tune kept it only in its trial folder (issue 10, rows 9, 10, 12)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.results.summary import failure_lines, last_line
from harness.run import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_NONE_COMPLETED,
    _none_completed_hint,
    exit_status,
    main,
    parse_args,
)
from harness.tune.recorder import trial_error
from harness.tune.resume import resume_command
from tests.harness.conftest import tiny_study

pytestmark = pytest.mark.usefixtures("ray_init_calls")  # tests/harness/conftest.py: Ray refused


@pytest.mark.parametrize(("options", "message"), [
    (["--results", ""], "--results: empty"),
    (["--results", "   "], "--results: empty"),
    (["--num-cpus", "-1"], "--num-cpus: must be at least 1, got -1"),
    (["--num-cpus", "0"], "--num-cpus: must be at least 1, got 0"),
    (["--num-gpus", "-1"], "--num-gpus: must be at least 0, got -1"),
    (["--retry-failed"], "--retry-failed: only with --resume"),
    (["--progress-every", "0"], "--progress-every: must be a positive number"),
])
def test_unusable_options_exit_2_and_create_nothing(options, message, write_study, tmp_path, monkeypatch, capsys,
                                                    ray_init_calls):
    spec = write_study(tiny_study())
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative or empty --results would land here
    args = [str(spec), *options]
    if "--results" not in options:
        args += ["--results", str(tmp_path / "results")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert list(work.iterdir()) == [] and not (tmp_path / "results").exists()
    assert ray_init_calls == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"objective": {"metric": "valid_acc"}}, "objective.metric: valid_acc is not computed on mosi data"),
    ({"name": "a."}, "name: must be 1-64 letters"),  # passed the spec, then the results folder refused it
])
def test_errors_found_after_reading_the_file_name_the_file(fields, message, write_study, tmp_path, capsys):
    spec = write_study(tiny_study(**fields))
    assert main([str(spec), "--dry-run", "--no-measure", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {spec}: 1 problem(s):") and message in err, err
    assert not (tmp_path / "r").exists()


def _finished_study(write_study, tmp_path: Path) -> tuple[list[str], Path]:
    """A finished study (a row for every planned trial, report asked for) and the arguments resuming it."""
    import json

    import pyarrow as pa

    from harness.results.sink import ResultStore
    from harness.study.data import load_study_data
    from harness.study.load import load_spec
    from harness.study.plan import build_plan

    path = write_study(tiny_study(name="done", report=True))
    spec = load_spec(path)
    store = ResultStore(tmp_path / "results", "done")
    store.create("name: done\n", {"study": "done", "status": "finished", "counts": {"completed": 3}})  # stale
    for trial in build_plan(spec, load_study_data(spec.data)).trials:
        store.write_table("trials", trial.trial_id, pa.table({"trial_id": [trial.trial_id], "status": ["completed"]}))
    assert json.loads(store.info_path.read_text())["status"] == "finished"
    return [str(path), "--results", str(tmp_path / "results"), "--resume"], store.dir


def test_resuming_a_finished_study_remakes_a_report_that_is_missing_or_older_than_its_rows(
        write_study, tmp_path, monkeypatch, capsys):
    # a Ctrl-C or a kill during the report left none (or half of one); the resume said "nothing to resume"
    import harness.run as run

    args, study = _finished_study(write_study, tmp_path)
    asked: list[bool] = []
    monkeypatch.setattr(run, "_finish", lambda plan, store, *, report_now=True, timings=None: asked.append(report_now))
    assert main(args) == 0 and asked == [True]  # no report.md
    (study / "report.md").write_text("# an earlier report\n")
    assert main(args) == 0 and asked[-1] is False  # newer than every row: kept
    newest = max(p.stat().st_mtime for p in (study / "trials").glob("*.parquet"))
    os.utime(study / "report.md", (newest - 60, newest - 60))
    assert main(args) == 0 and asked[-1] is True
    assert "already finished" in capsys.readouterr().out


def test_a_ctrl_c_while_a_finished_studys_report_is_remade_says_the_study_is_finished(
        write_study, tmp_path, monkeypatch, capsys):
    import harness.run as run

    args, _ = _finished_study(write_study, tmp_path)

    def ctrl_c(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_finish", ctrl_c)
    assert main(args) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "after the study ended (finished, every row recorded)" in err and "nothing was changed" not in err


def test_resuming_a_finished_study_on_read_only_storage_sums_it_up(write_study, tmp_path, monkeypatch, capsys):
    import harness.run as run
    from harness.results.sink import ResultStore

    args, _ = _finished_study(write_study, tmp_path)

    def read_only(self: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(ResultStore, "lock", read_only)
    asked: list[bool] = []
    monkeypatch.setattr(run, "_finish", lambda plan, store, *, report_now=True, timings=None: asked.append(report_now))
    assert main(args) == 0 and asked == [False]
    assert "cannot be written (Read-only file system)" in capsys.readouterr().err


def test_resuming_a_finished_study_another_driver_holds_changes_nothing(write_study, tmp_path, capsys):
    # a driver retrying its failed trials holds the study; a plain --resume used to mark it finished anyway
    from harness.results.sink import ResultStore

    args, study = _finished_study(write_study, tmp_path)
    info = (study / "study.json").read_text()
    with ResultStore(tmp_path / "results", "done").lock():
        assert main(args) == 2
    assert "another process is running this study" in capsys.readouterr().err
    assert (study / "study.json").read_text() == info and not (study / "report.md").exists()


def test_a_stop_that_comes_with_the_last_tuning_row_leaves_the_confirmation_owed(monkeypatch):
    # Tune asks its stopper after each step, so the time budget can run out in the step that records the
    # last tuning trial: every row is in, the confirmation never ran, and the study said finished, exit 0
    import harness.run as run
    from harness.study.data import load_study_data
    from harness.study.load import parse_spec
    from harness.study.plan import build_plan
    from harness.timings import Timings
    from harness.tune import confirmation, runner

    monkeypatch.setattr(runner, "run_tune", lambda *a, **k: runner.RunOutcome({"completed": 4}, True,
                                                                             stopped="time budget"))
    monkeypatch.setattr(run, "_confirmation_left", lambda *a: 2)
    monkeypatch.setattr(confirmation, "run_confirmation", lambda *a: pytest.fail("the budget is spent"))
    spec = parse_spec(tiny_study(confirm={"top": 1, "seeds": [7, 8]}))
    out = run._run_phases(build_plan(spec, load_study_data(spec.data)), None, runner.RunOptions(), "v", Timings())
    assert (out.complete, out.stopped) == (False, "time budget")
    assert exit_status(out.counts, complete=out.complete, stopped=out.stopped) == EXIT_INCOMPLETE


def test_a_study_fingerprinted_with_untyped_choices_still_resumes(write_study, tmp_path):
    # before the loader read 1e-4 as a number, categorical choices and when values were kept as the
    # text YAML 1.1 gave (['1e-4', '1e-3']); typed today, they must not count as a changed spec
    from harness.results.sink import ResultStore
    from harness.run import check_existing, spec_fingerprint
    from harness.study.errors import SpecError
    from harness.study.load import load_spec

    study = tiny_study(name="old", grid=None, search={"n_trials": 2, "params": {
        "model.router": {"type": "categorical", "choices": ["learned", "uniform"]},
        "train.lr": {"type": "categorical", "choices": [1e-4, 1e-3], "when": {"model.router": "learned"}}}})
    spec = load_spec(write_study(study))
    assert spec.search.params["train.lr"].choices == [1e-4, 1e-3]
    old = {**spec_fingerprint(spec), "search.params.train.lr.choices": ["1e-4", "1e-3"]}
    store = ResultStore(tmp_path / "results", "old")
    store.create("name: old\n", {"study": "old", "status": "interrupted", "fingerprint": old})
    assert check_existing(store, spec, resume=True)["status"] == "interrupted"
    store.update_info(fingerprint={**old, "search.params.train.lr.choices": ["1e-4", "1e-2"]})
    with pytest.raises(SpecError, match=r"search\.params\.train\.lr\.choices"):  # a real change is still one
        check_existing(store, spec, resume=True)


def test_the_exit_status_rule():
    assert exit_status({"completed": 1, "failed": 3}, complete=True, stopped=None) == 0
    assert exit_status({"failed": 2, "diverged": 1}, complete=True, stopped=None) == EXIT_NONE_COMPLETED
    assert exit_status({}, complete=True, stopped=None) == EXIT_NONE_COMPLETED
    assert exit_status({"completed": 2}, complete=False, stopped="time budget") == EXIT_INCOMPLETE
    assert exit_status({"completed": 2}, complete=False, stopped="interrupted") == EXIT_INTERRUPTED
    assert exit_status({"completed": 2}, complete=True, stopped="interrupted") == EXIT_INTERRUPTED


def test_the_hint_after_no_completed_trial_only_offers_retry_failed_for_failed_trials():
    resume = "python -m harness.run s.yaml --resume"
    assert _none_completed_hint({"failed": 2, "diverged": 1}, resume).endswith(
        "--resume --retry-failed (1 diverged: final, not run again)")
    every_diverged = _none_completed_hint({"diverged": 4}, resume)  # --retry-failed would do nothing here
    assert "--retry-failed" not in every_diverged and "new study" in every_diverged


def test_the_resume_command_repeats_every_option_that_locates_the_study(tmp_path):
    args = parse_args(["studies/x y.yaml", "--results", "rel/res", "--set", "seeds=[1, 2]", "--set",
                       "time_budget_s=25", "--address", "10.0.0.5:6379", "--num-gpus", "1"])
    text = resume_command(args)
    assert text == ("python -m harness.run 'studies/x y.yaml' --results " + str(Path("rel/res").absolute())
                    + " --set 'seeds=[1, 2]' --set time_budget_s=25 --address 10.0.0.5:6379 --num-gpus 1 --resume")


def test_a_trial_error_kept_only_in_its_folder_is_read_from_there(tmp_path):
    """On a cluster whose workers cannot run the trial, Tune may hand back no error; error.txt has it."""
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  ...\n"
                                        "ModuleNotFoundError: No module named 'emoe'\n")
    trial = SimpleNamespace(get_error=lambda: None, local_path=str(tmp_path), path=None, num_failures=2)
    text = trial_error(trial)
    assert last_line(text) == "ModuleNotFoundError: No module named 'emoe'"
    bare = SimpleNamespace(get_error=lambda: None, local_path=str(tmp_path / "gone"), path=None, num_failures=2)
    assert "after 2 failure(s)" in trial_error(bare)


def test_failure_lines_count_the_failed_trials_and_show_each_last_line():
    import pandas as pd

    trials = pd.DataFrame({"trial_id": ["a" * 12, "b" * 12, "c" * 12], "variant": ["x", "y", "z"],
                           "seed": [1, 1, 1], "status": ["failed", "completed", "failed"],
                           "error": ["Traceback\n  line\nRuntimeError: boom", None, "ValueError: bad\n\n"]})
    lines = failure_lines(trials)
    assert lines[0].startswith("2 of 3 trials failed")
    assert lines[1].endswith("x, seed 1: RuntimeError: boom") and lines[2].endswith("z, seed 1: ValueError: bad")
    assert failure_lines(trials[trials["status"] == "completed"]) == []
