"""A whole study with and without stacked trials, side by side: wall time and per-member equality.

Runs ``python -m harness.run <study>`` once per ``resources.stack`` value (default 1 then 3), alternating
over ``--repeats``, from the repository root, and compares every trial of the stacked runs with the same
trial of the ``stack: 1`` run: same trial ids and row counts in ``trials/``, ``epochs/``, ``router/`` and
``predictions/``, the largest relative difference of any metric or per-sample value and the share within
1e-4. In float32 the batched kernels round differently from the unbatched ones (last bits; training may
amplify them over epochs); ``--float64-check`` trains the study's first 3 trials stacked and alone in
float64 in this process, where they agree exactly. The report is off by default (it costs the same in
both).

    nice python bench/stacked_study.py                          # studies/distill_weight.yaml, 1 vs 3
    nice python bench/stacked_study.py --stacks 1,auto --repeats 2
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, format_table, machine_note, median, run_timed

__all__ = ["compare", "float64_check", "main", "tables"]

_KEYS = {"trials": ["trial_id"], "epochs": ["trial_id", "epoch"], "router": ["trial_id", "sample"],
         "predictions": ["trial_id", "split", "sample"]}
_METRICS = ("train_", "valid_", "test_", "w_", "pred")


def tables(study_dir: Path) -> dict[str, pd.DataFrame]:
    """Every results table of a finished study, rows in a fixed order (for ``compare``)."""
    return {name: pd.read_parquet(study_dir / name).sort_values(keys).reset_index(drop=True)
            for name, keys in _KEYS.items()}


def compare(alone: dict[str, pd.DataFrame], stacked: dict[str, pd.DataFrame]) -> tuple[list[str], float, float]:
    """(the tables whose trial ids or row counts differ, each with how, e.g. ``epochs (36 rows vs 33; trials
    only alone: 4f2a...)``, largest relative difference of a metric or per-sample value over the rows both
    have (absolute below 1e-3), share of values within 1e-4 of that); both NaN when no row is in both."""
    differ, diffs = [], []
    for name, keys in _KEYS.items():
        a, s = alone[name], stacked[name]
        if not (len(a) == len(s) and list(a["trial_id"]) == list(s["trial_id"])):
            ids_a, ids_s = set(a["trial_id"]), set(s["trial_id"])
            how = [f"{len(a)} rows vs {len(s)}"]
            how += [f"trials only {side}: {', '.join(sorted(map(str, ids))[:3])}"
                    for side, ids in (("alone", ids_a - ids_s), ("stacked", ids_s - ids_a)) if ids]
            differ.append(f"{name} ({'; '.join(how)})")
        cols = [c for c in a.columns if (c.startswith(_METRICS) or c == "objective") and c in s.columns]
        both_rows = a[keys + cols].merge(s[keys + cols], on=keys, suffixes=("", " stacked"))
        x = both_rows[cols].to_numpy(float)
        y = both_rows[[f"{c} stacked" for c in cols]].to_numpy(float)
        both = np.isfinite(x) & np.isfinite(y)
        if not (np.isfinite(x) == np.isfinite(y)).all():
            differ.append(f"{name} (missing values differ)")
        if len(both_rows):
            # relative difference, absolute below 1e-3 (a per-sample prediction near 0 has no useful relative one)
            diffs.append(np.abs(x - y)[both] / np.maximum(np.abs(x[both]), 1e-3))
    if not diffs:  # no row in both runs: nothing was compared
        return differ, math.nan, math.nan
    rel = np.concatenate(diffs)
    return differ, float(rel.max()) if rel.size else 0.0, float((rel <= 1e-4).mean()) if rel.size else 1.0


def describe(checks: list[tuple[list[str], float, float]]) -> str:
    """``compare``'s results (one per repeat) in words: the tables that differ and the metrics' agreement."""
    differ = sorted({d for c in checks for d in c[0]})
    compared = [c for c in checks if not math.isnan(c[1])]
    return (("ids or rows DIFFER: " + "; ".join(differ) if differ else "same ids and rows")
            + (f"; metrics: max rel diff {max(c[1] for c in compared):.1e}, "
               f"{100 * min(c[2] for c in compared):.1f}% within 1e-4" if compared else
               "; no row in both runs to compare metrics in"))


def float64_check(study: str, k: int = 3) -> float:
    """The study's first ``k`` trials (their first seed, stackable scalars apart) trained stacked and each
    alone in float64, in this process: the largest relative difference of any epoch metric (0 means
    bit-identical), or raise if statuses or epoch counts differ. What the harness cannot do (its dtype is
    float32), to tell float32 rounding from a real difference."""
    import dataclasses

    import torch

    from emoe.stack import fit_stacked
    from emoe.train import train_emoe
    from harness.study.data import load_study_data
    from harness.study.load import load_spec
    from harness.study.plan import build_plan

    spec = load_spec(study)
    plan = build_plan(spec, load_study_data(spec.data))

    def up(split: object) -> object:
        return dataclasses.replace(split, **{f: getattr(split, f).astype(np.float64)  # type: ignore[call-overload]
                                             for f in ("text", "audio", "vision", "labels")})

    d = plan.data.data
    data = dataclasses.replace(d, train=up(d.train), valid=up(d.valid), test=up(d.test))
    cfgs = [t.config for t in plan.trials[:k]]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        stacked = fit_stacked(cfgs, data)
        alone = [train_emoe(c, data) for c in cfgs]
    finally:
        torch.set_default_dtype(previous)
    worst = 0.0
    for s_run, a_run in zip(stacked, alone):
        if (s_run.status, s_run.epochs_run, s_run.best_epoch) != (a_run.status, a_run.epochs_run, a_run.best_epoch):
            raise AssertionError(f"stacked {s_run.status}/{s_run.epochs_run} vs alone {a_run.status}/{a_run.epochs_run}")
        for hs, ha in zip(s_run.history, a_run.history):
            for part in ("train", "valid"):
                for key, want in getattr(ha, part).items():
                    worst = max(worst, abs(getattr(hs, part)[key] - want) / max(abs(want), 1e-12))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="studies/distill_weight.yaml")
    p.add_argument("--stacks", default="1,3", help="resources.stack values, the first is the reference (1)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--report", action="store_true", help="build the study's report too (off by default)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--float64-check", action="store_true",
                   help="only train the study's first 3 trials stacked and alone in float64 and compare")
    args = p.parse_args(argv)
    if args.float64_check:
        print(f"float64, first 3 trials of {args.study}, stacked vs alone: max rel diff of any epoch metric "
              f"{float64_check(args.study):.1e}")
        return 0
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    print(machine_note(), flush=True)
    walls: dict[str, list[float]] = {s: [] for s in stacks}
    cpus: dict[str, list[float]] = {s: [] for s in stacks}
    checks: dict[str, list[tuple[bool, float, float]]] = {s: [] for s in stacks[1:]}
    with tempfile.TemporaryDirectory(prefix="stacked-study-") as tmp:
        for repeat in range(args.repeats):
            found: dict[str, dict[str, pd.DataFrame]] = {}
            for stack in stacks:
                results = Path(tmp) / f"r{repeat}-s{stack}"
                cmd = [PYTHON, "-m", "harness.run", args.study, "--results", str(results),
                       "--set", f"resources.stack={stack}"]
                if not args.report:
                    cmd += ["--set", "report=false"]
                wall, cpu, rc = run_timed(cmd, timeout=args.timeout, log=Path(tmp) / f"r{repeat}-s{stack}.log")
                if rc != 0:
                    print((Path(tmp) / f"r{repeat}-s{stack}.log").read_text()[-3000:])
                    print(f"stack {stack}: exit status {rc}")
                    return 1
                walls[stack].append(wall)
                cpus[stack].append(sum(cpu.seen.values()))
                (study_dir,) = [d for d in results.iterdir() if d.is_dir()]
                found[stack] = tables(study_dir)
                print(f"repeat {repeat + 1}, stack {stack}: {wall:.1f} s wall", flush=True)
            for stack in stacks[1:]:
                checks[stack].append(compare(found[stacks[0]], found[stack]))
    rows = []
    for stack in stacks:
        ratio = median(walls[stacks[0]]) / median(walls[stack])
        same = "reference" if stack == stacks[0] else describe(checks[stack])
        rows.append([stack, median(walls[stack]), median(cpus[stack]), f"{ratio:.2f}x", same])
    print(format_table(["resources.stack", "wall s (median)", "CPU s (median)", "speed vs first", "members vs alone"],
                       rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
