"""Harness efficiency: N identical trials through ``python -m harness.run`` against the same trials in plain
Python calling ``emoe.train.train_emoe``, side by side in one run.

Three sides, each timed from launch to exit (interpreter start, imports, data, training; for the
harness also Ray, result files and checkpoints), with its CPU time summed over its whole process tree
(Ray's own processes included):

- ``loop``: one plain process trains the trials one after another (the plain Python loop of the
  target, harness <= 1.1x its time), with ``--loop-threads`` torch threads: 1 by default (in one run
  here, with a package install running alongside, a 2-thread loop took 271 s over trials that a
  1-thread loop trains in 135-151 s: at this model size OpenMP synchronisation costs more than the
  second thread gains, and far more when the cores are busy);
- ``parallel``: P plain processes, one torch thread each, each training every P-th trial: the same
  parallelism as the harness, a stricter baseline that only Ray's own costs separate from it;
- ``harness``: a local Ray runtime of P CPUs (``--num-cpus P``), one CPU per trial.

The order of the sides rotates between repeats; medians of the ratios are printed. The epochs per
trial are calibrated first so that a trial lasts about ``--trial-seconds`` under the current load (P
plain processes time a 3-epoch trial).

    python bench/harness_overhead.py                          # 8 trials of ~20 s, 2 at a time, 1 repeat
    python bench/harness_overhead.py --repeats 3 --epochs 6   # fixed epochs instead of calibrating
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, TreeCPU, format_table, machine_note, median, run_timed, write_study

__all__ = ["main", "plain_worker", "study"]


def study(name: str, trials: int, epochs: int) -> dict[str, Any]:
    """N identical trials (seeds 1..N) of a small EMOE on the 'small' synthetic preset, ``epochs`` each."""
    return {
        "name": name,
        "description": "bench/harness_overhead.py: identical trials, harness against a plain loop",
        "data": {"synthetic": {"preset": "small", "seed": 0}},
        "base": {"model": {"d_model": 32, "n_heads": 4, "n_levels": 2},
                 "train": {"lr": 1.0e-3, "batch_size": 16, "max_epochs": epochs, "early_stop": epochs}},
        "seeds": list(range(1, trials + 1)),
        "objective": {"metric": "valid_mae", "mode": "min"},
        "scheduler": {"name": "fifo"},
        "resources": {"cpus": 1},
        "max_failures": 0,
    }


def plain_worker(spec_path: str, index: int, every: int, out: str, threads: int = 1) -> None:
    """Train trials ``index, index + every, ...`` of the study one after another, as plain Python would."""
    import torch

    from emoe.train import train_emoe
    from harness.study.data import load_study_data
    from harness.study.load import load_spec
    from harness.study.plan import build_plan

    torch.set_num_threads(threads)
    spec = load_spec(spec_path)
    plan = build_plan(spec, load_study_data(spec.data))
    with open(out, "w") as fh:
        for trial in plan.trials[index::every]:
            epoch_s: list[float] = []
            start = time.perf_counter()
            result = train_emoe(trial.config, plan.data.data,
                                on_epoch=lambda record, _, acc=epoch_s: acc.append(record.time_s))
            fh.write(json.dumps({"seed": trial.seed, "seconds": time.perf_counter() - start,
                                 "epochs": result.epochs_run, "epoch_s": epoch_s}) + "\n")


Side = tuple[float, dict[str, float], list[float]]  # wall seconds, CPU seconds by kind, per-trial seconds


def calibrate(work: Path, parallel: int, target_s: float, timeout: float) -> int:
    """Epochs per trial for trials of about ``target_s`` seconds under the current load: P plain processes
    each train one 3-epoch trial at once; the median time of their last two epochs sets the count."""
    spec = write_study(work / "calibrate.yaml", study("calibrate", parallel, 3))
    outs = [work / f"calibrate-{i}.jsonl" for i in range(parallel)]
    procs = [subprocess.Popen([PYTHON, __file__, "--plain-worker", str(spec), str(i), str(parallel), str(o), "1"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i, o in enumerate(outs)]
    for proc in procs:
        err = proc.communicate(timeout=timeout)[1]
        if proc.returncode != 0:
            raise RuntimeError(f"calibration failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    epoch_s = median([t for o in outs for line in o.read_text().splitlines()
                      for t in json.loads(line)["epoch_s"][1:]])
    return max(2, round(target_s / epoch_s))


def run_plain(spec_path: Path, parallel: int, work: Path, timeout: float, *, loop_threads: int = 0) -> Side:
    """P plain processes in parallel, one torch thread each; or (``loop_threads`` > 0) one process training
    the trials one after another with that many torch threads: the plain Python loop of the target."""
    loop = loop_threads > 0
    n_procs, threads = (1, loop_threads) if loop else (parallel, 1)
    outs = [work / f"plain-{'loop' if loop else 'par'}-{i}.jsonl" for i in range(n_procs)]
    start = time.perf_counter()
    procs = [subprocess.Popen([PYTHON, __file__, "--plain-worker", str(spec_path), str(i), str(n_procs),
                               str(outs[i]), str(threads)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
             for i in range(n_procs)]
    cpu = TreeCPU([p.pid for p in procs])
    cpu.start()
    errors = [p.communicate(timeout=timeout)[1] for p in procs]
    wall = time.perf_counter() - start
    cpu.stop()
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"plain worker failed ({p.returncode}):\n{err.decode()[-2000:]}")
    per_trial = [json.loads(line)["seconds"] for o in outs for line in o.read_text().splitlines()]
    return wall, {"plain processes": sum(cpu.seen.values())}, per_trial


def run_harness(spec_path: Path, parallel: int, work: Path, timeout: float) -> Side:
    """The study through the CLI; per-trial seconds are the trials' ``time_total_s``."""
    import pandas as pd

    results = work / "results"
    log = work / "harness.log"
    cmd = [PYTHON, "-m", "harness.run", str(spec_path), "--results", str(results), "--num-cpus", str(parallel),
           "--progress-every", "3600"]
    wall, cpu, rc = run_timed(cmd, timeout=timeout, log=log)
    if rc != 0:
        raise RuntimeError(f"harness run failed ({rc}); see the end of its log:\n{log.read_text()[-3000:]}")
    trials = pd.read_parquet(next(results.iterdir()) / "trials")
    if not (trials["status"] == "completed").all():
        raise RuntimeError(f"not every trial completed: {trials['status'].value_counts().to_dict()}")
    kinds = {("driver" if k == "root" else "trial workers" if k == "ray worker" else k): v
             for k, v in cpu.by_kind().items()}
    return wall, kinds, trials["time_total_s"].astype(float).tolist()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--trials", type=int, default=8, help="identical trials per side (default 8)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per trial (default: calibrated to --trial-seconds under the current load)")
    p.add_argument("--trial-seconds", type=float, default=20.0,
                   help="target length of a trial when calibrating the epochs (default 20)")
    p.add_argument("--parallel", type=int, default=2, help="trials at a time on each side (default 2)")
    p.add_argument("--loop-threads", type=int, default=1, help="torch threads of the plain loop (default 1)")
    p.add_argument("--repeats", type=int, default=1,
                   help="side-by-side repeats, order alternating (default 1)")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per side and repeat")
    p.add_argument("--plain-worker", nargs=5, metavar=("SPEC", "INDEX", "EVERY", "OUT", "THREADS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.trials, args.parallel, args.repeats) < 1 or (args.epochs is not None and args.epochs < 1):
        p.error("--trials, --epochs, --parallel and --repeats must be positive")
    if args.trial_seconds <= 0:
        p.error("--trial-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_worker:
        spec, index, every, out, threads = args.plain_worker
        plain_worker(spec, int(index), int(every), out, int(threads))
        return 0
    print(machine_note(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as tmp:
        epochs = args.epochs or calibrate(Path(tmp), args.parallel, args.trial_seconds, args.timeout)
    how = "as given" if args.epochs else f"calibrated for ~{args.trial_seconds:g} s trials"
    print(f"{args.trials} identical trials x {epochs} epochs ({how}), {args.parallel} at a time on each side",
          flush=True)
    rows: list[list[object]] = []
    walls: dict[str, list[float]] = {"loop": [], "parallel": [], "harness": []}
    cpus: dict[str, list[float]] = {"loop": [], "parallel": [], "harness": []}
    kinds: dict[str, list[float]] = {}
    runners = {"loop": lambda *a: run_plain(*a, loop_threads=args.loop_threads), "parallel": run_plain,
               "harness": run_harness}
    order = list(runners)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for rep in range(args.repeats):
            work = Path(tmp) / f"rep{rep}"
            spec = write_study(work / "study.yaml", study(f"overhead{rep}", args.trials, epochs))
            got: dict[str, Side] = {}
            for side in order[rep % 3:] + order[:rep % 3]:  # rotate, so load drifts hit every side
                got[side] = runners[side](spec, args.parallel, work, args.timeout)
                wall, by_kind, _ = got[side]
                walls[side].append(wall)
                cpus[side].append(sum(by_kind.values()))
                if side == "harness":
                    for kind, seconds in by_kind.items():
                        kinds.setdefault(kind, []).append(seconds)
                print(f"repeat {rep + 1}: {side} {wall:.1f} s wall, {sum(by_kind.values()):.1f} s CPU",
                      flush=True)
            hw, lw, pw = walls["harness"][-1], walls["loop"][-1], walls["parallel"][-1]
            rows.append([rep + 1, lw, pw, hw, hw / lw, hw / pw, cpus["harness"][-1] / cpus["parallel"][-1],
                         median(got["loop"][2]), median(got["parallel"][2]), median(got["harness"][2])])
    print()
    print(format_table(["repeat", "loop wall s", "parallel wall s", "harness wall s", "harness/loop",
                        "harness/parallel", "CPU harness/parallel", "loop s/trial", "parallel s/trial",
                        "harness s/trial"], rows))
    loop_ratio = median([r[4] for r in rows])  # type: ignore[misc]
    par_ratio = median([r[5] for r in rows])  # type: ignore[misc]
    print(f"\nharness / plain loop (one process, trials one after another, {args.loop_threads} torch thread(s)), "
          f"median of {len(rows)}: {loop_ratio:.3f} (target <= 1.10)")
    print(f"harness / {args.parallel} plain processes in parallel (equal parallelism, a stricter baseline): "
          f"{par_ratio:.3f}; CPU time {median([r[6] for r in rows]):.3f}")  # type: ignore[misc]
    print("harness CPU seconds by process, medians: "
          + ", ".join(f"{k} {median(v):.1f}" for k, v in kinds.items()))
    print("wall: launch to exit of each side (interpreter start, imports, data, training; for the harness "
          "also Ray, result files and checkpoints). CPU: user + system seconds of the side's whole process "
          "tree (Ray's own processes included). s/trial: median of the trials' own time (harness: "
          "time_total_s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
