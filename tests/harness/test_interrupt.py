"""Ctrl-C and SIGTERM wherever they land in a run (harness/run.py): as the tuning phase ends, between the
phases, while the study is prepared, and SIGTERM from outside. Signals are sent by the test process itself
at the moment under test (an event of the run: a phase starts or ends, a trial has started), never after a
fixed wait; the runs use the shared test cluster and tiny studies."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.tune.interrupt import exit_code, interrupted, signals_stop, stopped_by
from tests.harness.conftest import signal_when_a_trial_starts, tiny_study


def _info(root: Path) -> dict[str, object]:
    return json.loads((root / "study.json").read_text())


def _rows(root: Path) -> pd.DataFrame:
    parts = list((root / "trials").glob("*.parquet"))
    return pd.read_parquet(root / "trials") if parts else pd.DataFrame({"status": [], "phase": []})


def _confirming_study(write_study, **fields: object) -> Path:
    return write_study(tiny_study(name="stop", confirm={"top": 1, "seeds": [7]}, **fields))


def test_a_first_signal_only_asks_to_stop_a_second_stops_at_once_and_the_flag_lasts_the_command(capsys):
    previous = signal.getsignal(signal.SIGINT)
    with signals_stop():  # the command: at once
        with signals_stop("stopping"):  # a phase
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupted()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        with signals_stop("the next phase"):  # nested: the command's flag is kept, not cleared
            assert interrupted()
        with pytest.raises(KeyboardInterrupt):  # at once again
            os.kill(os.getpid(), signal.SIGINT)
    assert "interrupted: stopping (Ctrl-C again to stop at once)" in capsys.readouterr().err
    assert exit_code() == 130 and signal.getsignal(signal.SIGINT) is previous
    with signals_stop("a new command"):
        assert not interrupted()  # the outermost level starts afresh


def test_on_stop_runs_in_a_thread_started_with_its_level_which_waits_for_it(capsys):
    # the handler used to start the thread itself: a signal landing inside Thread.start (which holds a
    # lock start needs) would hang the process, and nothing waited for an on_stop still writing study.json
    import threading

    running, release, ran = threading.Event(), threading.Event(), []

    def on_stop() -> None:
        running.set()
        release.wait(60)
        ran.append("study.json marked")

    with signals_stop("stopping", on_stop=on_stop):
        assert "on-stop" in [t.name for t in threading.enumerate()]  # before any signal
        started = threading.Thread.start
        threading.Thread.start = lambda self: pytest.fail("a thread started in the signal handler")  # type: ignore[method-assign]
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            threading.Thread.start = started  # type: ignore[method-assign]
        assert running.wait(60) and ran == []
        release.set()
    assert ran == ["study.json marked"]  # the level ended only once on_stop had


def test_sigterm_is_a_ctrl_c_whose_exit_status_is_143(capsys):
    previous = signal.getsignal(signal.SIGTERM)
    with signals_stop("stopping"):
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupted()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # either signal, a second time: at once
    assert exit_code() == 143 and stopped_by() == "interrupted (SIGTERM)"  # the first one decides
    assert "interrupted (SIGTERM): stopping (send it again to stop at once)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.ray
def test_a_ctrl_c_as_the_tuning_phase_ends_stops_the_study_before_its_confirmation(
        ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    """The Ctrl-C lands once Tune has no trial left to stop, as the confirmation is about to start in the
    same Tune run: the study still stops, exit 130, and the confirmation runs on --resume."""
    from harness.run import main
    from harness.tune import runner

    units = runner.ConfirmationSwitch.units

    def ctrl_c_then_units(self):
        os.kill(os.getpid(), signal.SIGINT)  # every tuning trial has ended
        return units(self)

    monkeypatch.setattr(runner.ConfirmationSwitch, "units", ctrl_c_then_units)
    args = [str(_confirming_study(write_study)), "--results", str(tmp_path / "results")]
    assert main(args) == 130
    out, err = capsys.readouterr()
    root = tmp_path / "results" / "stop"
    rows = _rows(root)
    assert "confirm:" not in out and "continue with:" in err
    assert len(rows) == 4 and set(rows["phase"]) == {"tune"}
    info = _info(root)
    assert info["status"] == "interrupted" and info["counts"] == {"completed": 4}

    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert set(_rows(root)["phase"]) == {"tune", "confirm"}


@pytest.mark.ray
def test_the_time_budget_is_one_per_command_and_the_confirmation_gets_what_tuning_left(
        ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    """The budget runs out as the tuning phase ends (its clock moved on by the budget, as the confirmation is
    about to start in the same Tune run): the confirmation does not start a budget of its own, the run is
    incomplete (exit 4) and --resume confirms."""
    from harness.run import EXIT_INCOMPLETE, main
    from harness.tune import runner

    units = runner.ConfirmationSwitch.units

    def spend_the_budget_then_units(self):
        monkeypatch.setattr(runner, "_now", lambda: time.monotonic() + 3600, raising=False)
        return units(self)

    monkeypatch.setattr(runner.ConfirmationSwitch, "units", spend_the_budget_then_units)
    args = [str(_confirming_study(write_study, time_budget_s=3600)), "--results", str(tmp_path / "results")]
    assert main(args) == EXIT_INCOMPLETE
    out = capsys.readouterr().out
    root = tmp_path / "results" / "stop"
    assert "incomplete (the time budget ran out)" in out and "--resume" in out
    assert set(_rows(root)["phase"]) == {"tune"} and _info(root)["status"] == "incomplete"

    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert set(_rows(root)["phase"]) == {"tune", "confirm"}


@pytest.mark.ray
@pytest.mark.parametrize(("where", "signals"), [("tuning", 1), ("confirmation", 1), ("confirmation", 2)])
def test_a_ctrl_c_between_the_phases_leaves_the_study_interrupted_with_its_counts(
        where, signals, ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    """Outside Tune's run: before the tuning phase (just after the study was created) or as the
    confirmation starts; once (stop cleanly) or twice (at once)."""
    from harness.run import main
    from harness.tune import confirmation_start, runner

    module, name = (runner, "run_tune") if where == "tuning" else (confirmation_start, "start_confirmation")
    original = getattr(module, name)

    def ctrl_c_first(*args, **kwargs):
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, ctrl_c_first)
    assert main([str(_confirming_study(write_study)), "--results", str(tmp_path / "results")]) == 130
    assert "continue with:" in capsys.readouterr().err
    root = tmp_path / "results" / "stop"
    rows, info = _rows(root), _info(root)
    assert info["status"] == "interrupted" and info["finished_at"]
    assert info["counts"] == rows["status"].value_counts().to_dict()
    assert len(rows) == (0 if where == "tuning" else 4) and "confirm" not in set(rows["phase"])


def test_a_ctrl_c_while_the_study_is_prepared_exits_130_with_a_line_and_creates_nothing(
        write_study, tmp_path, capsys, monkeypatch, ray_init_calls):
    """Before Ray starts (reading the spec and data, importing Ray and Tune): no traceback, not exit 1."""
    from harness import run

    def ctrl_c(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(run, "prepare", ctrl_c)
    try:
        code = run.main([str(write_study(tiny_study(name="prep"))), "--results", str(tmp_path / "results")])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped as a KeyboardInterrupt (a traceback and exit status 1)")
    assert code == 130 and not (tmp_path / "results").exists() and ray_init_calls == []
    err = capsys.readouterr().err
    assert err.strip() == "interrupted before the study ran; no trial ran (run the same command again)"


def test_a_ctrl_c_while_damaged_files_move_aside_lets_the_move_finish(write_study, tmp_path, capsys, monkeypatch,
                                                                       ray_init_calls):
    """A resume moves damaged files to quarantine/ while it prepares: a Ctrl-C then cut the move short and
    said "nothing was changed"; now the move ends (files and reasons.txt together), then the command stops."""
    from harness import run
    from harness.results import quarantine

    moved: list[str] = []

    def move(store: object, previous: dict[str, object], *, dry_run: bool) -> dict[str, object]:
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C lands while the files move
        moved.append("finished")  # reached only if the signal did not cut the move short
        return previous

    monkeypatch.setattr(quarantine, "quarantine_damaged", move)
    spec = write_study(tiny_study(name="q"))
    results = tmp_path / "results"
    (results / "q").mkdir(parents=True)
    (results / "q" / "study.json").write_text(json.dumps({"study": "q", "status": "interrupted",
                                                          "results_dir": str(results / "q")}))
    assert run.main([str(spec), "--results", str(results), "--resume"]) == 130
    assert moved == ["finished"] and ray_init_calls == []
    assert "moving the damaged files aside first" in capsys.readouterr().err


@pytest.mark.ray
def test_a_first_signal_marks_the_study_interrupted_at_once(ray_cluster, write_study, tmp_path, monkeypatch):
    """study.json says interrupted while the run is still stopping, not only at its end: a SIGTERM that
    also reached Ray's processes (``timeout``, a walltime) can end the driver before that."""
    from harness.run import main
    from harness.tune import confirmation_start

    root, original, seen = tmp_path / "results" / "stop", confirmation_start.start_confirmation, []

    def ctrl_c_then_look(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _info(root)["status"] == "running":
            time.sleep(0.02)  # polls for the event: study.json rewritten
        seen.append(_info(root))
        return original(*args, **kwargs)

    monkeypatch.setattr(confirmation_start, "start_confirmation", ctrl_c_then_look)
    assert main([str(_confirming_study(write_study)), "--results", str(tmp_path / "results")]) == 130
    assert [(i["status"], i["counts"], i.get("finished_at")) for i in seen] == [("interrupted", {"completed": 4}, None)]


@pytest.mark.ray
def test_sigterm_stops_the_study_like_a_ctrl_c_and_exits_143(ray_cluster, write_study, tmp_path):
    """SIGTERM to the driver alone (``docker stop``, ``kill``): the trials are stopped, what finished is
    recorded, the study is interrupted and can be continued; not Ray's C++ handler's stack dump (134)."""
    study = tiny_study(name="term", grid={"loss.distill_weight": [0.0, 0.25, 0.5, 0.75, 1.0]}, seeds=[1])
    study["base"]["train"]["max_epochs"] = 4
    results = tmp_path / "results"
    root = results / "term"
    cmd = [sys.executable, "-m", "harness.run", str(write_study(study)), "--results", str(results),
           "--address", ray_cluster.address]
    proc, out, err = signal_when_a_trial_starts(cmd, root, signal.SIGTERM)
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted (SIGTERM): stopping the running trials" in err and "continue with:" in err
    assert "SIGTERM received at time" not in err and "Traceback" not in err
    assert "study term interrupted (SIGTERM)" in out
    rows, info = _rows(root), _info(root)
    assert info["status"] == "interrupted" and info["counts"] == rows["status"].value_counts().to_dict()
    assert len(rows) < 5
