"""The harness at scale: simulated studies of N trials through the real driver path, per size and kind.

Each (size, kind) runs in a fresh driver process (``python bench/scale.py --one ...``) that calls
``harness.run.main`` in-process on a study with ``simulate: true`` (``harness.tune.simulated``: the
trials draw learning curves instead of training), so what is measured is the harness's own path: spec,
plan, a local Ray runtime, Tune, the searcher, the result files, the summary. Kinds: ``grid`` (N/5
learning rates x 5 seeds, FIFO) and ``search`` (N Optuna TPE proposals, one seed, ASHA). Printed per run:

* wall time of the whole command and of the Tune run (``run_tune``), and the latter per trial;
* the driver's peak resident memory (``ru_maxrss`` of the driver process; Ray's own processes and the
  trial workers are not in it) when ``harness.run`` returns, and again once the driver has compacted the
  study (as a user's run of 100 trials or more does at its end): the second is the whole command's peak;
* files written under the study directory, and how many of them are Tune's (``tune/``);
* Tune's experiment-state snapshots: count and total time (``TuneController.save_to_dir``, timed here);
* for a search, Optuna's ask and tell time per trial (``optuna.Study.ask``/``tell``, timed here);
* the time to load the results (``reports.load.load_study``) and to build the report (figures and
  tables in PNG; in a separate process, so the driver's peak is not theirs), and the same after
  compaction (``harness.results.compact``).

    python bench/scale.py                                 # 200 trials, grid and search (a smoke run)
    python bench/scale.py --trials 1000,10000 --kinds grid
    python bench/scale.py --trials 1000 --kinds search --profile /tmp/scale.prof   # cProfile of the driver
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, format_table, machine_note, write_study

__all__ = ["main", "measure", "study"]

#: Seeds of a grid study (paper sweeps: configurations x 5 seeds).
GRID_SEEDS = 5


def study(name: str, kind: str, trials: int, epochs: int, sampler: str = "tpe") -> dict[str, Any]:
    """A simulated study of ``trials`` trials on the tiny synthetic preset (the data only size the
    per-sample files): a grid of learning rates x 5 seeds, or a search (TPE by default) with ASHA."""
    base = {"model": {"d_model": 8, "n_heads": 2, "n_levels": 1, "kernel_l": 3, "kernel_v": 3, "kernel_a": 3,
                      "router_input": "mean"},
            "train": {"lr": 1.0e-3, "max_epochs": epochs, "early_stop": epochs}}
    spec: dict[str, Any] = {"name": name, "description": "bench/scale.py", "simulate": True,
                            "data": {"synthetic": {"preset": "tiny", "seed": 0}}, "base": base,
                            "objective": {"metric": "valid_mae"}, "resources": {"cpus": 1}, "max_failures": 0}
    if kind == "grid":
        configs = max(1, trials // GRID_SEEDS)
        spec["grid"] = {"train.lr": [float(f"{1e-5 * (3e-2 / 1e-5) ** (i / max(1, configs - 1)):.6g}")
                                     for i in range(configs)]}
        spec["seeds"] = list(range(1, GRID_SEEDS + 1))
    else:
        spec["search"] = {"sampler": sampler, "seed": 0, "n_trials": trials, "params": {
            "train.lr": {"type": "loguniform", "low": 1e-5, "high": 3e-2},
            "loss.distill_weight": {"type": "uniform", "low": 0.0, "high": 1.0},
            "model.temperature": {"type": "loguniform", "low": 0.01, "high": 1.0},
            "model.out_dropout": {"type": "uniform", "low": 0.0, "high": 0.6}}}
        spec["seeds"] = [1]
        spec["scheduler"] = {"name": "asha", "grace_period": 1, "reduction_factor": 3}
    return spec


class _Timer:
    """Accumulates the calls and seconds of a wrapped method."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.calls += 1
                timer.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def _files(root: Path) -> tuple[int, int]:
    def count(folder: Path) -> int:
        return sum(len(files) for _, _, files in os.walk(folder))

    return count(root), count(root / "tune")


def _report_times(study_dir: Path) -> tuple[float, float]:
    """Seconds to load the study's results, and to build its report (PNG figures, tables, report.md)."""
    import matplotlib

    matplotlib.use("Agg")
    from reports.build import write_report
    from reports.load import load_study

    start = time.perf_counter()
    loaded = load_study(study_dir)
    loaded_s = time.perf_counter() - start
    start = time.perf_counter()
    write_report(loaded, formats=["png"])
    return loaded_s, time.perf_counter() - start


def _report_times_apart(study_dir: Path) -> tuple[float, float]:
    """``_report_times`` in a child process (the report's memory is not the driver's)."""
    proc = subprocess.run([PYTHON, str(Path(__file__).resolve()), "--times", str(study_dir)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("TIMES ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"loading {study_dir} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    load_s, report_s = json.loads(lines[-1].removeprefix("TIMES "))
    return float(load_s), float(report_s)


def measure(spec_path: Path, results: Path, num_cpus: int, profile: str | None) -> dict[str, Any]:
    """Run one study in this process (the driver) and return its figures."""
    import optuna
    import ray
    from ray.tune.execution.tune_controller import TuneController

    import harness.tune.runner as runner
    from harness.run import main as harness_main

    snapshots, ask, tell, tune_run = _Timer(), _Timer(), _Timer(), _Timer()
    workers: list[int] = []
    shutdown = ray.shutdown

    def count_workers_then_shutdown(*args: Any, **kwargs: Any) -> Any:
        """Worker processes Ray started for this driver (one core-worker log each): actor starts."""
        node = getattr(ray._private.worker, "_global_node", None)  # type: ignore[attr-defined]
        if node is not None:
            workers.append(len(list(Path(node.get_session_dir_path(), "logs").glob("python-core-worker-*.log"))))
        return shutdown(*args, **kwargs)

    ray.shutdown = count_workers_then_shutdown
    snapshots.wrap(TuneController, "save_to_dir")
    ask.wrap(optuna.Study, "ask")
    tell.wrap(optuna.Study, "tell")
    tune_run.wrap(runner, "run_tune")
    import harness.run  # noqa: F401  (run_tune is imported inside execute, from the wrapped module)

    # --no-compact: the run leaves per-trial files, so loading them and the compaction are timed apart below
    # (a user's run of 100 trials or more compacts at its end: its wall time is the run's plus the compaction's,
    # its peak memory the "with compaction" figure, the compaction being done here by this same driver process)
    argv = [str(spec_path), "--results", str(results), "--num-cpus", str(num_cpus), "--progress-every", "60",
            "--no-compact"]
    start = time.perf_counter()
    if profile:
        import cProfile

        prof = cProfile.Profile()
        code = prof.runcall(harness_main, argv)
        prof.dump_stats(profile)
    else:
        code = harness_main(argv)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name = spec_path.stem
    study_dir = results / name
    total, tune = _files(study_dir)
    out: dict[str, Any] = {"exit": code, "wall_s": wall, "tune_s": tune_run.seconds, "peak_mb": peak_mb,
                           "files": total, "tune_files": tune,
                           "workers": workers[0] if workers else None, "snapshots": snapshots.calls,
                           "snapshot_s": snapshots.seconds, "asks": ask.calls, "ask_s": ask.seconds,
                           "tells": tell.calls, "tell_s": tell.seconds}
    out["load_s"], out["report_s"] = _report_times_apart(study_dir)
    from harness.results.compact import compact_study
    from harness.results.sink import ResultStore

    start = time.perf_counter()
    compact_study(ResultStore(results, name))
    out["compaction"] = time.perf_counter() - start
    out["peak_compact_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["files_compacted"] = _files(study_dir)[0]
    out["load_compacted_s"], out["report_compacted_s"] = _report_times(study_dir)
    return out


def _one(args: argparse.Namespace) -> int:
    if args.times:
        print("TIMES " + json.dumps(_report_times(Path(args.times))), flush=True)
        return 0
    print("RESULT " + json.dumps(measure(Path(args.one), Path(args.results), args.num_cpus, args.profile)),
          flush=True)
    return 0


def _row(size: int, kind: str, r: dict[str, Any]) -> list[Any]:
    per = 1000 * r["tune_s"] / size
    ask = f"{1000 * (r['ask_s'] + r['tell_s']) / size:.1f}" if r["asks"] else "-"
    compacted = (
        f"{r['load_compacted_s']:.1f} / {r['report_compacted_s']:.1f} ({r['files_compacted']} files, "
        f"compaction {r['compaction']:.1f} s)")
    return [size, kind, r["exit"], f"{r['wall_s']:.1f}", f"{r['tune_s']:.1f}", f"{per:.0f}", f"{r['peak_mb']:.0f}",
            f"{r['peak_compact_mb']:.0f}",
            f"{r['files']} ({r['tune_files']} tune/)", f"{r['snapshots']} / {r['snapshot_s']:.2f}", ask,
            f"{r['load_s']:.1f} / {r['report_s']:.1f}", compacted]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", default="200", help="comma-separated study sizes (default 200)")
    p.add_argument("--kinds", default="grid,search", help="grid, search or both (default both)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    p.add_argument("--sampler", default="tpe",
                   help="the search's Optuna sampler (default tpe; random: a search without TPE's own cost)")
    p.add_argument("--num-cpus", type=int, default=8,
                   help="logical CPUs of the local Ray runtime, one per trial (default 8)")
    p.add_argument("--results", default=None, help="results root (default: a temporary directory, removed)")
    p.add_argument("--profile", default=None, metavar="FILE", help="cProfile the driver into FILE (one run)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one study file here
    p.add_argument("--times", default=None, help=argparse.SUPPRESS)  # internal: load/report times of a study
    args = p.parse_args(argv)
    if args.one or args.times:
        return _one(args)
    sizes = [int(s) for s in args.trials.split(",") if s.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not sizes or any(s < GRID_SEEDS for s in sizes) or not set(kinds) <= {"grid", "search"} or not kinds:
        p.error(f"--trials: sizes of at least {GRID_SEEDS}; --kinds: grid and/or search")
    print(machine_note())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(args.results) if args.results else Path(tmp) / "results"
        for size in sizes:
            for kind in kinds:
                name = f"scale_{kind}_{size}" + (f"_{args.sampler}" if kind == "search" and args.sampler != "tpe" else "")
                spec = write_study(Path(tmp) / f"{name}.yaml", study(name, kind, size, args.epochs, args.sampler))
                cmd = [PYTHON, str(Path(__file__).resolve()), "--one", str(spec), "--results", str(root),
                       "--num-cpus", str(args.num_cpus)] + (["--profile", args.profile] if args.profile else [])
                log = Path(tmp) / f"{name}.log"
                with open(log, "w") as fh:
                    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, cwd=REPO,
                                          env={**os.environ, "PYTHONPATH": str(REPO)})
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    print(f"{name}: failed (exit {proc.returncode}); driver output:\n{proc.stdout[-3000:]}\n"
                          f"{log.read_text()[-3000:]}", file=sys.stderr)
                    return 1
                result = json.loads(lines[-1].removeprefix("RESULT "))
                rows.append(_row(size, kind, result))
                print(f"{name}: {json.dumps(result)}", flush=True)
    print(format_table(["trials", "kind", "exit", "wall s", "tune s", "ms/trial", "driver peak MB",
                        "peak MB with compaction", "files",
                        "snapshots n / s", "ask+tell ms/trial", "load / report s", "compacted load / report s"],
                       rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
