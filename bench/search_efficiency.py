"""Search efficiency: Optuna TPE + ASHA against the full grid over the same space, through the harness.

The space is learning rate x distillation weight x router temperature (3 values each, 27 points) for
a small EMOE on the built-in synthetic benchmark ('small' preset). The full grid trains every point
for ``--epochs`` epochs; each search (one per search seed) proposes ``--trials`` configurations from
the same 27 with TPE, and ASHA (grace 1 epoch, reduction factor 3) stops the weak ones early. Every
trial uses the same training seed, so a configuration trained to the end scores exactly as in the grid.

Printed per search seed: the best validation MAE found (over completed trials, and over all trials
including ones ASHA stopped), its gap to the grid's best, and the training epochs spent as a share of
the grid's. Target: within 2% of the grid's best using at most 30% of its epochs. Also printed: how many
grid points lie within 2% of the best (the chance a single random draw would hit the target).

    python bench/search_efficiency.py                         # 27-point grid + 3 searches of 10 trials
    python bench/search_efficiency.py --trials 8 --epochs 9 --search-seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_note, quiet_harness, write_study

__all__ = ["SPACE", "main"]

SPACE: dict[str, list[float]] = {
    "train.lr": [3.0e-4, 1.0e-3, 3.0e-3],
    "loss.distill_weight": [0.0, 0.3, 1.0],
    "model.temperature": [0.03, 0.1, 0.3],
}
BASE = {"model": {"d_model": 16, "n_heads": 2, "n_levels": 1}, "train": {"batch_size": 32}}


def common(name: str, epochs: int) -> dict[str, Any]:
    base = {"model": dict(BASE["model"]),
            "train": {**BASE["train"], "max_epochs": epochs, "early_stop": epochs}}
    return {"name": name, "data": {"synthetic": {"preset": "small", "seed": 0}}, "base": base,
            "seeds": [1111], "objective": {"metric": "valid_mae", "mode": "min"}, "resources": {"cpus": 1},
            "max_failures": 0, "checkpoint_every": 0}


def grid_study(epochs: int) -> dict[str, Any]:
    return {**common("grid", epochs), "grid": {k: list(v) for k, v in SPACE.items()},
            "scheduler": {"name": "fifo"}}


def search_study(seed: int, trials: int, epochs: int, grace: int, rf: float) -> dict[str, Any]:
    params = {k: {"type": "categorical", "choices": list(v)} for k, v in SPACE.items()}
    return {**common(f"search_{seed}", epochs),
            "search": {"sampler": "tpe", "seed": seed, "n_trials": trials, "params": params},
            "scheduler": {"name": "asha", "grace_period": grace, "reduction_factor": rf}}


def run_study(study: dict[str, Any], work: Path, parallel: int) -> Any:
    """Run a study through ``harness.run.main`` (Ray already started); its trial rows."""
    import pandas as pd

    spec = write_study(work / f"{study['name']}.yaml", study)
    log = work / f"{study['name']}.log"
    rc = quiet_harness([str(spec), "--results", str(work / "results"), "--num-cpus", str(parallel),
                        "--progress-every", "3600"], log)
    if rc != 0:
        raise RuntimeError(f"study {study['name']} exited with {rc}; its output:\n{log.read_text()[-3000:]}")
    return pd.read_parquet(work / "results" / study["name"] / "trials")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--epochs", type=int, default=9, help="epochs per full trial, ASHA's max_t (default 9)")
    p.add_argument("--trials", type=int, default=10, help="configurations per search (default 10)")
    p.add_argument("--search-seeds", default="0,1,2", help="TPE seeds, one search each (default 0,1,2)")
    p.add_argument("--grace", type=int, default=1, help="ASHA grace period in epochs (default 1)")
    p.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA reduction factor (default 3)")
    p.add_argument("--parallel", type=int, default=2, help="trials at a time (default 2)")
    args = p.parse_args(argv)
    try:
        args.search_seeds = [int(s) for s in args.search_seeds.split(",")]
    except ValueError:
        p.error(f"--search-seeds: expected comma-separated integers, got {args.search_seeds!r}")
    if min(args.epochs, args.trials, args.grace, args.parallel) < 1:
        p.error("--epochs, --trials, --grace and --parallel must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    print(machine_note(), flush=True)
    n_points = 1
    for values in SPACE.values():
        n_points *= len(values)
    print(f"space: {' x '.join(f'{k} {v}' for k, v in SPACE.items())} = {n_points} points; "
          f"{args.epochs} epochs per full trial; {args.parallel} trials at a time", flush=True)
    ray.init(address="local", num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
            work = Path(tmp)
            start = time.perf_counter()
            grid = run_study(grid_study(args.epochs), work, args.parallel)
            print(f"grid: {len(grid)} trials in {time.perf_counter() - start:.0f} s", flush=True)
            searches = {}
            for seed in args.search_seeds:
                start = time.perf_counter()
                searches[seed] = run_study(search_study(seed, args.trials, args.epochs, args.grace,
                                                        args.reduction_factor), work, args.parallel)
                print(f"search seed {seed}: {len(searches[seed])} trials in "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
    finally:
        ray.shutdown()
    return report(grid, searches)


def report(grid: Any, searches: dict[int, Any]) -> int:
    """Print the comparison table and the grid's landscape."""
    done = grid[grid["status"] == "completed"]
    best = float(done["objective"].min())
    grid_epochs = int(grid["epochs_run"].sum())
    near = int((done["objective"] <= 1.02 * best).sum())
    rows: list[list[Any]] = [["grid", len(grid), "-", grid_epochs, 1.0, best, "-", best, "-", "-"]]
    passed = 0
    for seed, t in searches.items():
        completed = t[t["status"] == "completed"]
        best_done = float(completed["objective"].min()) if len(completed) else float("nan")
        best_any = float(t["objective"].min())
        epochs = int(t["epochs_run"].sum())
        ok = best_done <= 1.02 * best and epochs <= 0.30 * grid_epochs
        passed += ok
        rows.append([f"TPE+ASHA seed {seed}", len(t), int((t["status"] == "pruned").sum()), epochs,
                     epochs / grid_epochs, best_done, 100 * (best_done / best - 1), best_any,
                     100 * (best_any / best - 1), "yes" if ok else "no"])
    print()
    print(format_table(["study", "trials", "pruned", "epochs", "share of grid", "best valid MAE",
                        "gap %", "best incl. pruned", "gap %", "target met"], rows))
    print(f"\ntarget (best completed trial within 2% of the grid's best, <= 30% of its epochs) met by "
          f"{passed} of {len(searches)} searches")
    print(f"grid landscape: {near} of {len(done)} grid points are within 2% of the best ({best:.4f}); "
          f"median {float(done['objective'].median()):.4f}, worst {float(done['objective'].max()):.4f}")
    top = done.nsmallest(5, "objective")
    print("best grid points: " + "; ".join(f"{v} {o:.4f}" for v, o in zip(top["variant"], top["objective"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
