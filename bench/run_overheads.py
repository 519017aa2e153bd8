"""The fixed costs of a study beside its training epochs, measured on a smoke study: the figures behind the
constants of ``harness/study/cost.py`` that ``--dry-run`` adds to its estimate.

One repeat runs, each as a separate process timed from launch to exit:

1. ``python -c "import harness.run"``: the driver's interpreter start and imports; then
   ``--dry-run --no-measure``: the same plus its preparation (spec, data, plan);
2. the study itself (``report`` off); each line it prints is time-stamped as it arrives, and the trials'
   rows and epochs give when each trial started and finished and how long its epochs took;
3. ``python -m reports`` on its results (what ``report: true`` adds at the end).

From these: Ray's start (launch to the "study ...: N trials" line, less the preparation), the start of
the trials (that line to the first trial's start: Tune, the worker processes, the data fetched from the
object store), the cost of a trial beyond its epochs (per trial, including the gaps between trials on a
worker), the first trial's warm-up on a fresh worker, the end (last trial to exit: summary, Ray's
shutdown) and the report. Minimum over repeats: the least disturbed run.

    python bench/run_overheads.py                 # 3 repeats of studies/smoke.yaml
    python bench/run_overheads.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, format_table, machine_note

__all__ = ["main", "measure_once"]

STUDY = REPO / "studies" / "smoke.yaml"


def _timed(cmd: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """Wall seconds of ``cmd`` and its output lines, each with the wall-clock time it arrived."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = [(time.time(), line.rstrip()) for line in proc.stdout]
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n" + "\n".join(text for _, text in lines[-20:]))
    return time.time() - start, [(t - start, text) for t, text in lines]


def measure_once(results: Path) -> dict[str, float]:
    """One repeat: the parts of a smoke study's wall-clock time, in seconds."""
    import pandas as pd

    run = [PYTHON, "-m", "harness.run", str(STUDY), "--results", str(results)]
    import_s, _ = _timed([PYTHON, "-c", "import harness.run"])
    prepare_s, _ = _timed([*run, "--dry-run", "--no-measure"])
    launched = time.time()
    wall_s, lines = _timed(run)
    ready = next(t for t, text in lines if text.startswith("study smoke:") and "trials ->" in text)
    trials = pd.read_parquet(results / "smoke" / "trials")
    epochs = pd.read_parquet(results / "smoke" / "epochs").groupby("trial_id")["time_s"].sum()
    start = trials["started_at"].map(lambda ts: ts.timestamp() - launched)
    end = trials["finished_at"].map(lambda ts: ts.timestamp() - launched)
    beyond = (end - start) - trials["trial_id"].map(epochs)
    slots = min(os.cpu_count() or 1, len(trials))  # smoke: one CPU per trial, a runtime of every core
    busy = (end - start).sum()
    gaps = max(0.0, (end.max() - start.min()) * min(slots, len(trials)) - busy)
    first = start.sort_values().index[:slots]
    report_s, _ = _timed([PYTHON, "-m", "reports", str(results / "smoke")])
    return {"import": import_s, "prepare": prepare_s, "ray_start": ready - prepare_s, "trials_start": start.min() - ready,
            "warmup": float(beyond[first].mean() - beyond.drop(first).mean()),
            "per_trial": float(beyond.drop(first).mean() + gaps / len(trials)),
            "end": wall_s - end.max(), "report": report_s, "wall": wall_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(machine_note())
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="run_overheads_") as tmp:
            runs.append(measure_once(Path(tmp)))
        print(f"repeat {i + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in runs[-1].items()), flush=True)
    keys = list(runs[0])
    print(format_table(["part", "min s", "max s"], [[k, min(r[k] for r in runs), max(r[k] for r in runs)]
                                                     for k in keys]))
    print(machine_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
