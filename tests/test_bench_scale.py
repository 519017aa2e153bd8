"""``bench/scale.py`` (bench/README.md, "Scale") runs its simulated studies end to end and prints its figures:
one grid and one search of 10 trials of 2 epochs, on a 1-CPU local runtime (one trial process each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emoe_schema.layout import COMPACTED
from harness.results.sink import ResultStore

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.ray
def test_the_scale_benchmark_runs_a_small_grid_and_search_and_prints_every_figure(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "scale.py"), "--trials", "10", "--epochs", "2", "--num-cpus", "1",
           "--results", str(tmp_path / "results")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = proc.stdout.splitlines()[-2:]  # the grid's and the search's rows
    assert [line.split()[:3] for line in table] == [["10", "grid", "0"], ["10", "search", "0"]]
    assert "ask+tell ms/trial" in proc.stdout and "driver peak MB" in proc.stdout
    for kind in ("grid", "search"):  # every trial has its row (compacted by the benchmark after the run)
        trials = ResultStore(tmp_path / "results", f"scale_{kind}_10").read_trials()
        assert len(trials) == 10 and trials["trial_id"].is_unique
        assert (tmp_path / "results" / f"scale_{kind}_10" / "trials" / COMPACTED).exists()
