"""``harness.timings``: a run's phases, as study.json records them and the ``time:`` line shows them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.timings import LABELS, Timings
from tests.harness.conftest import tiny_study


def test_phases_add_up_in_run_order_and_parts_show_inside_their_phase() -> None:
    t = Timings()
    t.add("report", 6.04)
    t.add("tuning", 10.0)
    t.add("tuning", 8.5)  # a phase timed twice counts both
    t.add("tuning_first_trial", 2.61)
    t.add("ray_start", 3.3)
    t.add("confirm", None)  # nothing measured: not shown
    with t.phase("summary"):
        pass
    record = t.record()
    assert list(record) == ["ray_start_s", "tuning_s", "tuning_first_trial_s", "summary_s", "report_s", "total_s"]
    assert record["tuning_s"] == 18.5 and record["tuning_first_trial_s"] == 2.61 and record["report_s"] == 6.04
    assert 0 <= record["summary_s"] <= record["total_s"]
    assert t.describe() == ("Ray start 3.3 s, tuning 18.5 s (first trial running after 2.6 s), "
                            f"summary {t.phases['summary']:.1f} s, report 6.0 s")
    assert t.line().startswith("time: ") and t.line().endswith(f"({t.describe()})")
    assert Timings.from_record(record).describe() == t.describe()  # study.json reads back to the same text


def test_a_block_that_raises_is_still_timed_and_unknown_phases_are_refused() -> None:
    t = Timings()
    with pytest.raises(KeyError), t.phase("tuning"):
        raise KeyError("trial")
    assert "tuning" in t.phases
    with pytest.raises(ValueError, match="unknown phase 'tunning'"):
        t.add("tunning", 1.0)
    assert set(LABELS) >= {"prepare", "ray_start", "tuning", "confirm", "ray_stop", "report"}
    assert re.fullmatch(r"time: \d+\.\d s", Timings().line())  # nothing timed: the total alone


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="a process's start time from /proc (Linux)")
def test_a_process_knows_its_age_from_its_start_not_from_its_first_line() -> None:
    """``Timings.since_process_start`` counts the interpreter's start and imports (phase ``start``)."""
    script = ("import time; t = time.monotonic(); import torch; from harness.timings import Timings; "
              "timings = Timings.since_process_start(); print(time.monotonic() - t, timings.phases['start'])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 0, done.stderr
    since_first_line, age = map(float, done.stdout.split())
    assert since_first_line - 0.02 <= age < since_first_line + 30  # clock ticks are 10 ms


@pytest.mark.ray
def test_ctrl_c_while_a_finished_study_is_summed_up_exits_130_without_a_traceback(ray_cluster, write_study, tmp_path,
                                                                                 monkeypatch, capsys) -> None:
    """Every row is recorded before the summary and the report (and the wait for Ray's shutdown): a Ctrl-C
    there says so and exits 130, it is no crash; study.json keeps the run's status."""
    from harness import run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_finish", interrupted)
    spec = write_study(tiny_study(name="sumup"))
    assert run.main([str(spec), "--results", str(tmp_path / "r")]) == run.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted after the study ended (finished, every row recorded)" in err
    info = json.loads((tmp_path / "r" / "sumup" / "study.json").read_text())
    assert info["status"] == "finished" and info["counts"] and "timings" not in info
