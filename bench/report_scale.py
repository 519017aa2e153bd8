"""The report at scale: load a compacted study of N trials and build its report, timed and profiled.

Running 10 000 simulated trials through Ray takes 20+ minutes on a 2-core machine, and what is measured
here is only the reading and the report. So the study is made in two steps:

1. a small simulated study (``bench/scale.py``'s ``study()``, 20 trials by default) runs once through the
   real path (``python -m harness.run`` in a subprocess: spec, Tune, the sink, the summary) and is
   compacted, which gives the exact files, columns and types of every table;
2. its rows are the templates of N synthetic trials: each table's rows of template trial ``i % 20`` are
   copied with a new trial id, configuration, seed and parameters, metrics shifted by a per-configuration
   effect plus per-trial noise (so configurations differ and seeds scatter), and written as each table's
   ``compacted.parquet`` with the template's Arrow schema; study.json and spec.yaml are updated to match.

A ``grid`` is N/5 learning rates x 5 seeds (FIFO: every trial completes); a ``search`` is N proposals of
4 parameters with one seed, its trials pruned or completed as the templates' ASHA run was. Printed per
kind: the time to ``load_study`` and to build the report (PNG), and, with ``--profile``, the top of a
cProfile of the report build.

    python bench/report_scale.py --trials 10000                      # grid and search
    python bench/report_scale.py --trials 10000 --kinds grid --profile /tmp/report.prof --keep /tmp/rs

``--cli DIR`` instead times ``python -m reports DIR --jobs J`` (PNG and PDF, a fresh output directory
each run) for each J of ``--jobs``, interleaved, ``--repeats`` times: wall and CPU seconds (the process
and its figure workers), and whether every file matches the first J's byte for byte (SVG aside).

    python bench/report_scale.py --cli results/distill_weight --jobs 1,2 --repeats 5
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, format_table, machine_note, median, write_study
from scale import GRID_SEEDS, study

__all__ = ["main", "seed_study", "synthesize", "time_cli", "time_report"]

TABLES = ("trials", "epochs", "router", "predictions")
SEED_TRIALS = 20
_LOWER_IS_BETTER = ("_mae", "_loss", "objective")
_SEARCH_SPACE = {"train.lr": (1e-5, 3e-2, True), "loss.distill_weight": (0.0, 1.0, False),
                 "model.temperature": (0.01, 1.0, True), "model.out_dropout": (0.0, 0.6, False)}


def seed_study(root: Path, kind: str) -> Path:
    """Run the small simulated study of ``kind`` through ``harness.run`` (a subprocess) and compact it."""
    name = f"seed_{kind}"
    spec = write_study(root / f"{name}.yaml", study(name, kind, SEED_TRIALS, epochs=4))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for cmd in ([PYTHON, "-m", "harness.run", str(spec), "--results", str(root), "--num-cpus", "4"],
                [PYTHON, "-m", "harness.compact", str(root / name)]):
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}")
    return root / name


def _configs(kind: str, trials: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per trial: variant, seed and parameter values of the synthetic study."""
    if kind == "grid":
        n = max(1, trials // GRID_SEEDS)
        lrs = [float(f"{1e-5 * (3e-2 / 1e-5) ** (i / max(1, n - 1)):.6g}") for i in range(n)]
        rows = [{"variant": f"lr={lr}", "seed": s, "train.lr": lr} for lr in lrs for s in range(1, GRID_SEEDS + 1)]
        return pd.DataFrame(rows[:trials])
    width = len(str(trials - 1))
    out: dict[str, Any] = {"variant": [f"trial{i:0{width}d}" for i in range(trials)], "seed": np.ones(trials, int)}
    for p, (lo, hi, log) in _SEARCH_SPACE.items():
        u = rng.random(trials)
        out[p] = np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))) if log else lo + u * (hi - lo)
    return pd.DataFrame(out)


def _shift(df: pd.DataFrame, effect: np.ndarray, noise: np.ndarray, skip: set[str]) -> None:
    """Shift metric columns: errors up by ``effect``, scores down, both with per-row noise."""
    for col in df.columns:
        if col in skip or not pd.api.types.is_float_dtype(df[col]):
            continue
        if not (col.startswith(("valid_", "test_", "train_")) or col in ("objective", "prediction", "pred")):
            continue
        sign = 1.0 if col.endswith(_LOWER_IS_BETTER) or col in ("prediction", "pred") else -1.0
        values = df[col].to_numpy(dtype=float) * (1.0 + sign * effect + noise)
        if not col.endswith(_LOWER_IS_BETTER) and col not in ("prediction", "pred", "train_ent", "train_uni"):
            values = np.clip(values, -1.0, 1.0)
        df[col] = values


def synthesize(seed_dir: Path, out: Path, kind: str, trials: int, seed: int = 0) -> Path:
    """Write a compacted study of ``trials`` trials at ``out`` from the templates of ``seed_dir``."""
    rng = np.random.default_rng(seed)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    configs = _configs(kind, trials, rng)
    ids = [hashlib.sha1(f"{out.name}/{i}".encode()).hexdigest()[:12] for i in range(trials)]
    config_ids = {v: hashlib.sha1(f"{out.name}/{v}".encode()).hexdigest()[:12] for v in configs["variant"].unique()}
    # a per-configuration effect (smooth in log10(lr): a best learning rate near 1e-3) and per-trial noise
    lr = np.log10(configs["train.lr"].to_numpy())
    effect_of_trial = 0.08 * (lr + 3.0) ** 2 + rng.normal(0, 0.01, trials)
    if kind == "search":
        effect_of_trial += 0.1 * np.abs(configs["loss.distill_weight"].to_numpy() - 0.4)
    template = pq.read_table(seed_dir / "trials" / "compacted.parquet").to_pandas()
    template_ids = list(template["trial_id"])
    pick = np.arange(trials) % len(template_ids)
    for name in TABLES:
        path = seed_dir / name / "compacted.parquet"
        if not path.is_file():
            continue
        arrow = pq.read_table(path)
        df = arrow.to_pandas()
        positions = df.groupby("trial_id", sort=False).indices
        blocks = [np.asarray(positions.get(t, []), dtype=int) for t in template_ids]
        take = np.concatenate([blocks[k] for k in pick])
        owner = np.concatenate([np.full(len(blocks[k]), i) for i, k in enumerate(pick)])
        new = df.iloc[take].reset_index(drop=True)
        new["study"] = out.name
        new["trial_id"] = np.asarray(ids, dtype=object)[owner]
        new["variant"] = configs["variant"].to_numpy()[owner]
        new["config_id"] = new["variant"].map(config_ids)
        new["seed"] = configs["seed"].to_numpy()[owner].astype(df["seed"].dtype)
        for p in configs.columns[2:]:
            if p in new.columns:
                new[p] = configs[p].to_numpy()[owner].astype(df[p].dtype)
        if name == "trials":
            new["train.seed"] = new["seed"]
            base = pd.Timestamp(df["started_at"].min())
            step = pd.to_timedelta(np.arange(trials) * 0.5, unit="s")
            new["started_at"] = (base + step).astype(df["started_at"].dtype)
            new["finished_at"] = (base + step + pd.to_timedelta(new["time_total_s"].fillna(1.0), unit="s")
                                  ).astype(df["finished_at"].dtype)
        _shift(new, effect_of_trial[owner], rng.normal(0, 0.02, len(new)), skip=set(_SEARCH_SPACE))
        (out / name).mkdir()
        table = pa.Table.from_pandas(new, schema=arrow.schema, preserve_index=False)
        pq.write_table(table, out / name / "compacted.parquet", row_group_size=100_000)
    _write_meta(seed_dir, out, kind, configs)
    return out


def _write_meta(seed_dir: Path, out: Path, kind: str, configs: pd.DataFrame) -> None:
    meta = json.loads((seed_dir / "study.json").read_text())
    spec = yaml.safe_load((seed_dir / "spec.yaml").read_text())
    meta.update(study=out.name, results_dir=str(out), n_trials=len(configs), status="finished")
    spec["name"] = out.name
    if kind == "grid":
        lrs = list(dict.fromkeys(configs["train.lr"].tolist()))
        spec["grid"] = {"train.lr": lrs}
        meta.get("fingerprint", {})["grid.train.lr"] = lrs
    else:
        spec["search"]["n_trials"] = len(configs)
    status = pq.read_table(out / "trials" / "compacted.parquet", columns=["status"]).to_pandas()["status"]
    meta["counts"] = {str(k): int(v) for k, v in status.value_counts().items()}
    (out / "study.json").write_text(json.dumps(meta, indent=2))
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def time_report(study_dir: Path, profile: str | None = None, top: int = 25, jobs: int | None = None
                ) -> dict[str, Any]:
    """Seconds to load the study and to build its report (PNG, ``jobs`` as ``write_report`` takes it);
    with ``profile``, the build's cProfile (dumped to that file) and its top ``top`` functions by
    cumulative time."""
    import matplotlib

    matplotlib.use("Agg")
    from reports.build import write_report
    from reports.load import load_study

    start = time.perf_counter()
    loaded = load_study(study_dir)
    load_s = time.perf_counter() - start
    prof = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if prof is not None:
        prof.enable()
    paths = write_report(loaded, formats=["png"], jobs=jobs)
    if prof is not None:
        prof.disable()
    report_s = time.perf_counter() - start
    out: dict[str, Any] = {"load_s": load_s, "report_s": report_s, "files": len(paths)}
    if prof is not None and profile:
        prof.dump_stats(profile)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
        out["profile"] = buf.getvalue()
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".svg" not in p.name}


def _busy_s() -> float:
    """CPU seconds every process on the machine has used so far (/proc/stat; NaN elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def time_cli(study_dir: Path, jobs: list[str], repeats: int) -> list[list[Any]]:
    """Rows (jobs, run, wall s, CPU s, other CPU s, same files): ``python -m reports study_dir --jobs J``
    per J, interleaved ``repeats`` times, each into a fresh directory. CPU counts the figure workers too;
    other CPU is what the rest of the machine used meanwhile (a busy machine hides the workers' gain)."""
    rows: list[list[Any]] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="bench-report-cli-") as tmp:
        reference: dict[str, bytes] | None = None
        for run in range(1, repeats + 1):
            for j in jobs:
                out = Path(tmp) / f"jobs-{j}-{run}"
                cmd = [PYTHON, "-m", "reports", str(study_dir), "--out", str(out), "--jobs", j, "-q"]
                before, busy = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_s()
                start = time.perf_counter()
                subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
                wall = time.perf_counter() - start
                after, busy = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_s() - busy
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                files = _files(out)
                reference = files if reference is None else reference
                rows.append([j, run, wall, cpu, max(0.0, busy - cpu), "yes" if files == reference else "NO"])
                shutil.rmtree(out)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10_000, help="trials of the synthetic study (default 10000)")
    p.add_argument("--kinds", default="grid,search", help="grid, search or both (default both)")
    p.add_argument("--keep", default=None, metavar="DIR", help="make the studies under DIR and keep them "
                   "(a seed study already there is reused)")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="cProfile each report build into FILE.<kind> and print its top functions")
    p.add_argument("--jobs", default=None, help="the report's --jobs: one value (default auto), or with --cli "
                   "a comma-separated list to compare (default 1,auto)")
    p.add_argument("--cli", default=None, metavar="DIR", help="time `python -m reports DIR` for each --jobs "
                   "value instead (no synthetic study)")
    p.add_argument("--repeats", type=int, default=5, help="runs per --jobs value with --cli (default 5)")
    args = p.parse_args(argv)
    if args.cli is not None:
        print(machine_note())
        jobs = [j.strip() for j in (args.jobs or "1,auto").split(",") if j.strip()]
        rows = time_cli(Path(args.cli), jobs, args.repeats)
        print(format_table(["jobs", "run", "wall s", "CPU s", "other CPU s", "same files"], rows))
        for j in jobs:
            walls = [r[2] for r in rows if r[0] == j]
            print(f"jobs {j}: median {median(walls):.2f} s, min {min(walls):.2f} s wall over {len(walls)} runs")
        return 0
    jobs_arg = None if args.jobs in (None, "auto") else int(args.jobs)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.trials < GRID_SEEDS or not kinds or not set(kinds) <= {"grid", "search"}:
        p.error(f"--trials: at least {GRID_SEEDS}; --kinds: grid and/or search")
    print(machine_note())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-scale-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for kind in kinds:
            seed_dir = root / f"seed_{kind}"
            if not (seed_dir / "trials" / "compacted.parquet").is_file():
                start = time.perf_counter()
                seed_study(root, kind)
                print(f"seed {kind} study ({SEED_TRIALS} trials): {time.perf_counter() - start:.1f} s", flush=True)
            start = time.perf_counter()
            study_dir = synthesize(seed_dir, root / f"report_{kind}_{args.trials}", kind, args.trials)
            made_s = time.perf_counter() - start
            result = time_report(study_dir, f"{args.profile}.{kind}" if args.profile else None, jobs=jobs_arg)
            if "profile" in result:
                print(f"--- {kind}: cProfile of the report build (cumulative) ---\n{result['profile']}")
            configs = pq.read_table(study_dir / "trials" / "compacted.parquet", columns=["variant"]).column(0)
            rows.append([args.trials, kind, len(set(configs.to_pylist())), f"{made_s:.1f}",
                         f"{result['load_s']:.2f}", f"{result['report_s']:.1f}",
                         f"{result['load_s'] + result['report_s']:.1f}"])
    print(format_table(["trials", "kind", "configurations", "made s", "load s", "report s", "total s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
