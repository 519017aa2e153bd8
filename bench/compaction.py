"""Reading a study's results before and after compaction (issue 15): N synthetic trials written through the
sink exactly as the trainable writes them (a ``trials/`` row, ``--epochs`` epoch rows, ``--samples`` router
rows and twice as many prediction rows per trial), then timed: each table read by ``reports.load``, the
whole ``load_study``, the harness's ``read_trials``, and the per-trial ``status`` calls ``--resume`` makes;
then the compaction itself, and the same reads again.

    python bench/compaction.py --trials 5000                  # ~3 min writing on a busy 2-core machine
    python bench/compaction.py --trials 1000 --keep /tmp/study

Prints one table: what was timed, seconds with per-trial files, seconds compacted, and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import format_table, machine_note
from emoe.outputs import EpochRecord, RouterRecord
from emoe_schema import TABLES
from harness.results.compact import compact_study
from harness.results.rows import epoch_row, epochs_table, predictions_table, router_table, trial_table
from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.load import parse_spec
from harness.study.plan import build_plan
from harness.study.trial import Trial
from reports.load import load_study, read_table

STUDY = "compaction"


def _base_trial() -> Trial:
    spec = parse_spec({"name": STUDY, "data": {"synthetic": {"preset": "tiny", "seed": 0}}, "seeds": [1],
                       "objective": {"metric": "valid_mae"}, "grid": {"loss.distill_weight": [0.1]},
                       "base": {"train": {"max_epochs": 2}}})
    return build_plan(spec, load_study_data(spec.data)).trials[0]


def write_trial(store: ResultStore, base: Trial, index: int, epochs: int, samples: int) -> None:
    """One synthetic trial's four files, written through the sink (every fifth trial fails early)."""
    rng = np.random.default_rng(index)
    trial = dataclasses.replace(base, trial_id=f"{index:012x}", seed=index, variant=f"v{index % 50}")
    failed = index % 5 == 0
    recs = [EpochRecord(epoch=e, train={"loss": 1 / e}, valid={"loss": 1 / e, "mae": 1 / e}, lr=1e-3,
                        improved=True, best_epoch=e, test={"mae": 1 / e}, router_mean={"w_l": 0.4}, time_s=0.1)
            for e in range(1, (2 if failed else epochs) + 1)]
    store.write_table("epochs", trial.trial_id, epochs_table(trial, [epoch_row(r) for r in recs], label_kind="mosi"))
    if not failed:
        rec = RouterRecord(weights=rng.dirichlet([1, 1, 1], samples).astype(np.float32),
                           preds=rng.normal(size=samples).astype(np.float32),
                           labels=rng.integers(-3, 4, samples).astype(np.float32))
        store.write_table("router", trial.trial_id, router_table(trial, rec))
        store.write_table("predictions", trial.trial_id, predictions_table(trial, {"valid": rec, "test": rec}))
    now = datetime.now(UTC)
    mae = float(rng.uniform(0.6, 1.2))
    store.write_table("trials", trial.trial_id, trial_table(
        trial, label_kind="mosi", status="failed" if failed else "completed", error="RuntimeError" if failed else None,
        best_epoch=len(recs), epochs_run=len(recs), objective=mae, valid={"mae": mae, "loss": mae}, test={"mae": mae},
        time_total_s=1.0, time_per_epoch_s=0.1, started_at=now, finished_at=now, cpus=1, gpus=0, node="bench",
        node_id=None, attempts=1, code_version="bench", data="synthetic"))


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _reads(store: ResultStore) -> dict[str, float]:
    out = {f"read {t}/": _time(lambda t=t: read_table(store.table_dir(t))) for t in TABLES}
    out["reports load_study"] = _time(lambda: load_study(store.dir))
    out["harness read_trials"] = _time(store.read_trials)
    out["status of every trial (--resume)"] = _time(lambda: [store.status(t) for t in store.trial_ids()])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--samples", type=int, default=100, help="test samples per trial (router rows)")
    p.add_argument("--threads", type=int, default=4, help="threads writing the trials' files")
    p.add_argument("--keep", type=Path, default=None, help="write the study here and keep it")
    args = p.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    try:
        store = ResultStore(root, STUDY)
        store.create(f"name: {STUDY}\n", {"schema_version": 1, "study": STUDY, "kind": "grid", "varied": [],
                                          "objective": {"metric": "valid_mae", "mode": "min"}})
        base = _base_trial()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda i: write_trial(store, base, i, args.epochs, args.samples), range(1, args.trials + 1)))
        write_s = time.perf_counter() - t0
        files = sum(len(list(store.table_dir(t).glob("*.parquet"))) for t in TABLES)
        before = _reads(store)
        report = compact_study(store)
        after = _reads(store)
        print(machine_note())
        print(f"{args.trials} trials, {files} files written through the sink in {write_s:.1f} s "
              f"({args.threads} threads)\n{report}")
        rows = [[k, f"{before[k]:.3f}", f"{after[k]:.3f}", f"{before[k] / max(after[k], 1e-9):.0f}x"] for k in before]
        rows.append(["compaction", "", f"{report.seconds:.3f}", ""])
        print(format_table(["read", "per-trial files (s)", "compacted (s)", "speed-up"], rows))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
