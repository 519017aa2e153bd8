"""``bench/gpu_report.py`` keeps to its deadline and never loses a measured row: the device tool kills a
command at its time limit and returns only what is on disk, so the report file must hold every row as soon
as it is measured, and steps that cannot finish in time must be skipped rows, not a killed run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from gpu_report import Report  # noqa: E402


def test_every_row_is_on_disk_as_soon_as_it_is_added(tmp_path: Path) -> None:
    out = tmp_path / "gpu_report.md"
    report = Report("test", out, deadline_s=600, torch_version="x")
    report.add(["model step, faithful", "eager", "1,234", "-", "3.0", ""])
    first = out.read_text()
    assert "| model step, faithful | eager | 1,234 |" in first and first.startswith("# GPU report: test")
    report.add(["model step, faithful", "compile", "2,468", "2.00x", "30.0", ""])
    assert "| model step, faithful | eager |" in out.read_text() and "| compile | 2,468 |" in out.read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_step_gets_at_most_the_time_left_and_none_when_too_little_is_left() -> None:
    assert Report("t", None, deadline_s=600, torch_version="x").limit(75) == 75
    assert 40 < (Report("t", None, deadline_s=50, torch_version="x").limit(75) or 0) <= 45
    assert Report("t", None, deadline_s=12, torch_version="x").limit(75) is None


def test_a_run_past_its_deadline_skips_every_step_and_still_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_report.py"), "--cpu-check", "--skip", "packing",
                           "--deadline-s", "0", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| model step") or
            line.startswith("| main job")]
    assert len(rows) == 16  # 10 model-step variants, bf16 + graphs, 3 stacked, the main job twice
    assert all("skipped: the report's deadline" in row for row in rows)


def test_stacked_runs_whose_trials_differ_are_named_and_no_metric_agreement_is_claimed() -> None:
    """On the H200 the stacked main job confirmed other trials than the unstacked one (float32 rounding picks
    another winner): every table differed, and the note still said 'metrics max rel diff 0.0e+00, 100.0%
    within 1e-4', compared over nothing."""
    import math

    import pandas as pd
    from stacked_study import compare

    def tables(ids: list[str]) -> dict[str, pd.DataFrame]:
        frame = pd.DataFrame({"trial_id": ids, "epoch": 1, "sample": 0, "split": "valid", "valid_mae": [0.5] * len(ids)})
        return {name: frame for name in ("trials", "epochs", "router", "predictions")}

    differ, worst, share = compare(tables(["a", "b"]), tables(["c", "d"]))
    assert len(differ) == 4 and "trials only alone: a, b" in differ[0] and "trials only stacked: c, d" in differ[0]
    assert math.isnan(worst) and math.isnan(share)
    assert compare(tables(["a", "b"]), tables(["a", "b"])) == ([], 0.0, 1.0)
    shifted = tables(["a", "c"])  # the rows both runs have are still compared
    shifted["trials"] = shifted["trials"].assign(valid_mae=[0.6, 0.5])
    differ, worst, share = compare(tables(["a", "b"]), shifted)
    assert len(differ) == 4 and worst == pytest.approx(0.2) and share == 0.75  # 1 of the 4 common rows differs


def test_the_comparison_is_told_in_words_without_claims_over_nothing() -> None:
    import math

    from stacked_study import describe

    assert describe([([], 1e-6, 0.99)]) == "same ids and rows; metrics: max rel diff 1.0e-06, 99.0% within 1e-4"
    told = describe([(["trials (2 rows vs 2; trials only alone: b)"], math.nan, math.nan)])
    assert told.startswith("ids or rows DIFFER: trials") and "no row in both runs" in told and "0.0" not in told


def test_the_main_job_note_gives_each_phases_first_epoch_and_the_median_of_the_rest(tmp_path: Path) -> None:
    """Where a GPU run of the main job spends its epochs: the first (captures, CUDA's start) apart from the
    rest, per phase, read from the study's epoch rows; a run that wrote none says so instead of failing."""
    import pandas as pd
    from gpu_report import _epoch_times

    (tmp_path / "epochs").mkdir()
    pd.DataFrame({"phase": ["tune"] * 6 + ["confirm"] * 2, "epoch": [1, 2, 3, 1, 2, 3, 1, 1],
                  "time_s": [3.6, 0.3, 0.2, 3.8, 0.4, 0.25, 1.9, 2.1]}).to_parquet(tmp_path / "epochs" / "a.parquet")
    assert _epoch_times(tmp_path) == "epochs tune 3.70 then 0.28 s, confirm 2.00 s"
    assert _epoch_times(tmp_path / "missing").startswith("no epoch times")
