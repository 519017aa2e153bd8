"""The driver's memory after Tune: what ``python -m harness.run`` does once Ray Tune has returned, at N trials.

After Tune, the driver compacts the study (``harness.results.compact.compact_study``, at 100 trials or more)
and prints the summary (``ResultStore.read_trials`` + ``format_summary``); ``reports.load.load_study`` is
what the report then reads. Each of these steps runs here in a fresh process, on a study of N trials laid
out as a finished run leaves it (one Parquet part per trial and table, ``.runs/`` records), and is measured
by the process's peak resident memory (``VmHWM``, /proc/self/status) before and after the step, and its
time. The study comes from a real one: ``bench/report_scale.py`` runs a small simulated grid through the
real path, synthesizes N trials from its rows (compacted), and the rows are then split into the per-trial
parts the sink writes. Steps:

* ``read_trials``, ``summary`` (read_trials + format_summary), ``load_study``: on the parts;
* ``compact``: ``compact_study`` of the parts (on a copy); ``finish``: compaction, then read_trials +
  format_summary, as ``harness.run`` does at the end of a run (on another copy);
* ``read_compacted``, ``load_compacted``: the same reads once compacted.

    python bench/driver_memory.py --trials 1000,10000
    python bench/driver_memory.py --trials 3000 --keep /tmp/dm --compare /tmp/old-checkout   # before/after

``--compare DIR`` runs every step a second time with another checkout's code (``PYTHONPATH=DIR``, e.g.
``git worktree add /tmp/old <commit>``), on the same files, and prints both peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, format_table, machine_note

__all__ = ["STEPS", "main", "make_parts", "measure_step"]

#: Steps on the per-trial parts (read only), steps that compact a copy, steps on the compacted copy.
READ_STEPS = ("read_trials", "summary", "load_study")
COMPACT_STEPS = ("compact", "finish")
COMPACTED_STEPS = ("read_compacted", "load_compacted")
STEPS = READ_STEPS + COMPACT_STEPS + COMPACTED_STEPS


def _peak_mb() -> float:
    """This process's peak resident memory so far (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_parts(compacted: Path, out: Path, like: Path) -> Path:
    """A copy of a compacted study with each table's rows split into one part per trial, and ``.runs``
    records, as a finished run leaves it before its compaction. Each table's schema metadata is taken from
    the study ``like`` (written by the harness): the synthesized rows went through pandas, whose metadata
    (12 KB per file) the sink's parts do not carry and which would cost memory of its own when read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("study.json", "spec.yaml"):
        shutil.copy(compacted / name, out / name)
    meta = json.loads((out / "study.json").read_text())
    meta["results_dir"] = str(out)
    (out / "study.json").write_text(json.dumps(meta, indent=2))
    ids: set[str] = set()
    for table_dir in sorted(p for p in compacted.iterdir() if (p / "compacted.parquet").is_file()):
        table = pq.read_table(table_dir / "compacted.parquet")
        table = table.replace_schema_metadata(pq.read_schema(like / table_dir.name / "compacted.parquet").metadata)
        key = table.column("trial_id").to_pylist()
        rows: dict[str, list[int]] = {}
        for i, tid in enumerate(key):
            rows.setdefault(str(tid), []).append(i)
        (out / table_dir.name).mkdir()
        for tid, at in rows.items():  # as ResultStore.write_table writes a part
            pq.write_table(_own_dictionaries(table.take(pa.array(at))), out / table_dir.name / f"{tid}.parquet",
                           write_page_checksum=True)
        ids |= set(rows)
    (out / ".runs").mkdir()
    for tid in ids:
        (out / ".runs" / f"{tid}.json").write_text(json.dumps({"attempts": 1, "prior_s": 0.0, "current_s": 1.0}))
    return out


def _own_dictionaries(table: Any) -> Any:
    """``table`` with each dictionary column holding only its own values (a taken slice keeps the whole
    study's dictionary: every trial id in each part, which a part the sink writes does not carry)."""
    import pyarrow as pa

    columns = [c.cast(c.type.value_type).cast(c.type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _summary(store: Any) -> int:
    from harness.results.summary import format_summary

    info = store.read_info()
    trials = store.read_trials()
    format_summary(trials, objective=info["objective"]["metric"], mode=info["objective"]["mode"],
                   varied=list(info.get("varied") or []))
    return len(trials)


def measure_step(step: str, study_dir: Path) -> dict[str, Any]:
    """Run one step on ``study_dir`` in this process: seconds, and peak memory before and after (MB)."""
    import pandas  # noqa: F401  (imported before the base figure, as the driver has it)

    from harness.results.compact import compact_study
    from harness.results.sink import ResultStore
    from reports.load import load_study

    store = ResultStore(study_dir.parent, study_dir.name)
    actions: dict[str, Callable[[], object]] = {
        "read_trials": lambda: len(store.read_trials()), "summary": lambda: _summary(store),
        "load_study": lambda: len(load_study(study_dir).trials), "compact": lambda: compact_study(store).parts,
        "finish": lambda: (compact_study(store).parts, _summary(store)),
        "read_compacted": lambda: len(store.read_trials()), "load_compacted": lambda: len(load_study(study_dir).trials)}
    base = _peak_mb()
    start = time.perf_counter()
    got = actions[step]()
    return {"step": step, "seconds": time.perf_counter() - start, "base_mb": base, "peak_mb": _peak_mb(),
            "result": str(got)}


def _run(step: str, study_dir: Path, code: Path) -> dict[str, Any]:
    cmd = [PYTHON, str(Path(__file__).resolve()), "--one", step, "--study", str(study_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{step} on {study_dir} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def _steps(parts: Path, work: Path, codes: list[Path]) -> list[list[dict[str, Any]]]:
    """Every step with each code (rows: steps; columns: codes), compaction on fresh copies of ``parts``."""
    out = []
    for step in STEPS:
        row = []
        for i, code in enumerate(codes):
            target = parts
            if step in COMPACT_STEPS:
                target = work / f"c{i}" / parts.name
                if target.parent.exists():
                    shutil.rmtree(target.parent)
                shutil.copytree(parts, target, symlinks=True)
            elif step in COMPACTED_STEPS:
                target = work / f"c{i}" / parts.name  # compacted by this code's "finish"
            row.append(_run(step, target, code))
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", default="1000,10000", help="comma-separated study sizes (default 1000,10000)")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="make the studies under DIR and keep them (the seed study and made studies are reused)")
    p.add_argument("--compare", default=None, metavar="DIR", help="also run each step with the code of DIR")
    p.add_argument("--one", default=None, choices=STEPS, help=argparse.SUPPRESS)  # internal: one step here
    p.add_argument("--study", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(measure_step(args.one, Path(args.study))), flush=True)
        return 0
    sizes = [int(s) for s in args.trials.split(",") if s.strip()]
    if not sizes or min(sizes) < 5:
        p.error("--trials: comma-separated sizes of at least 5")
    from report_scale import seed_study, synthesize

    codes = [REPO] + ([Path(args.compare).resolve()] if args.compare else [])
    print(machine_note())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-driver-memory-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "seed_grid" / "trials" / "compacted.parquet").is_file():
            seed_study(root, "grid")
        for size in sizes:
            parts = root / f"parts_{size}" / "driver_memory"
            if not (parts / "study.json").is_file():
                start = time.perf_counter()
                synthesize(root / "seed_grid", root / f"compacted_{size}" / "driver_memory", "grid", size)
                make_parts(root / f"compacted_{size}" / "driver_memory", parts, like=root / "seed_grid")
                print(f"{size} trials made in {time.perf_counter() - start:.0f} s", flush=True)
            for step, results in zip(STEPS, _steps(parts, root / f"work_{size}", codes)):
                cells = []
                for r in results:
                    grown = r["peak_mb"] - r["base_mb"]
                    cells += [f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}", f"{grown:.0f}",
                              f"{1024 * grown / size:.1f}"]
                rows.append([size, step, *cells])
                print(f"{size} {step}: {json.dumps(results)}", flush=True)
            shutil.rmtree(root / f"work_{size}", ignore_errors=True)
    head = ["s", "peak MB", "grown MB", "KB/trial"]
    headers = ["trials", "step", *head] + ([f"{h} (--compare)" for h in head] if args.compare else [])
    print(format_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
