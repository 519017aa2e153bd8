"""Shared data: memory held while 4 concurrent trials train on a MOSEI-sized synthetic set, when the
harness shares one copy through Ray's object store against when every trial loads its own copy.

Each mode runs a real study through ``python -m harness.run``'s code path in a fresh driver process,
with one logical CPU per trial so all trials run at once, and a tiny EMOE trained for one epoch over
the whole set (every page of the data is read). When a trial has trained it waits at a barrier,
still holding its data, until the driver has measured; the driver then sums PSS over itself and all
its descendants (Ray's processes and trial workers; PSS counts a page shared by several processes,
such as the object store's, once). Modes:

- ``baseline``: the same study on a 16-sample stand-in with the same shapes (the memory of the
  driver, Ray and the trial workers without data),
- ``shared``: the harness as is (the data go once into the object store, trials read them there),
- ``own``: each trial loads its own copy of the set from ``.npy`` files (``np.load``, no sharing), as
  a plain script per trial would.

The figure is (mode - baseline) / size of one copy: target <= 1.3 for ``shared``, about 4 for ``own``.

    python bench/shared_data.py                      # half the MOSEI sample counts (about 1.9 GB)
    python bench/shared_data.py --scale 1            # full MOSEI size (about 3.7 GiB; own needs ~16 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, format_table, machine_note, tree_memory, write_study

__all__ = ["main"]

MOSEI = {"n_train": 16326, "n_valid": 1871, "n_test": 4659}
STAND_IN = 16  # samples per split of the stand-in data (baseline and own modes)
TINY = {"model": {"d_model": 8, "n_heads": 2, "n_levels": 1, "kernel_l": 3, "kernel_v": 3, "kernel_a": 3,
                  "router_input": "mean"},
        "train": {"lr": 1.0e-3, "batch_size": 128, "eval_batch_size": 512, "max_epochs": 1}}
FIELDS = ("text", "audio", "vision", "labels", "ids", "reliability")


def sizes(scale: float) -> dict[str, int]:
    return {k: max(STAND_IN, round(v * scale)) for k, v in MOSEI.items()}


def study(mode: str, scale: float, trials: int) -> dict[str, Any]:
    """One configuration x ``trials`` seeds; the data are the scaled set or the stand-in."""
    n = sizes(scale) if mode == "shared" else dict.fromkeys(MOSEI, STAND_IN)
    return {"name": f"shared_data_{mode}", "data": {"synthetic": {"preset": "mosei", "seed": 0, **n}},
            "base": TINY, "seeds": list(range(1, trials + 1)), "objective": {"metric": "valid_mae"},
            "scheduler": {"name": "fifo"}, "resources": {"cpus": 1}, "max_failures": 0,
            "checkpoint_every": 0}


# --- trial side (pickled by value into the Ray workers) --------------------------------------------

def load_own_copy(npy_dir: str) -> Any:
    """The data set read from ``.npy`` files into private memory (what a per-trial loader does)."""
    import numpy as np

    from emoe.data.arrays import DataSet, Split

    root = Path(npy_dir)
    splits = {s: Split(**{f: np.load(root / f"{s}.{f}.npy") for f in FIELDS})
              for s in ("train", "valid", "test")}
    return DataSet(**splits, name="own copy", label_kind="mosi")


def make_trainable(mode: str, npy_dir: str, barrier: str, timeout: float) -> Any:
    """The harness trainable, plus (own mode) a private copy of the data, plus a barrier at the end."""
    def emoe_trainable(config: dict[str, Any], data: Any = None, ctx: Any = None) -> None:
        from harness.tune.trainable import emoe_trainable as harness_trainable

        if mode == "own":
            data = load_own_copy(npy_dir)
        text = data.train.text
        info = {"pid": os.getpid(), "rows": len(text), "writeable": bool(text.flags.writeable),
                "owns_memory": bool(text.flags.owndata)}
        harness_trainable(config, data=data, ctx=ctx)
        tid = config["trial"].trial_id
        (Path(barrier) / f"ready-{tid}").write_text(json.dumps(info))
        deadline = time.monotonic() + timeout
        while not (Path(barrier) / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # ``data`` stays referenced while the driver measures
        del data

    return emoe_trainable


# --- driver side (one process per mode) -------------------------------------------------------------

def save_npy(scale: float, npy_dir: Path) -> int:
    """Generate the scaled set and save every array as ``.npy``; its size in bytes (Split.nbytes)."""
    import numpy as np

    from emoe.data.synthetic import make_synthetic, synthetic_spec

    data = make_synthetic(synthetic_spec("mosei", seed=0, **sizes(scale)))
    npy_dir.mkdir(parents=True, exist_ok=True)
    for name, split in data.splits().items():
        for f in FIELDS:
            np.save(npy_dir / f"{name}.{f}.npy", getattr(split, f))
    return sum(s.nbytes for s in data.splits().values())


def child(mode: str, scale: float, trials: int, work: Path, timeout: float) -> dict[str, Any]:
    """Run one mode's study in this process and measure at the barrier."""
    import harness.tune.runner
    from harness.run import main as harness_main

    npy_dir, barrier = work / "npy", work / f"barrier-{mode}"
    barrier.mkdir(parents=True)
    data_bytes = save_npy(scale, npy_dir) if mode == "own" else 0
    harness.tune.runner.study_trainable = make_trainable(mode, str(npy_dir), str(barrier), timeout)
    spec = write_study(work / f"{mode}.yaml", study(mode, scale, trials))
    me = os.getpid()
    out: dict[str, Any] = {"mode": mode, "peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            out["peak"] = max(out["peak"], tree_memory(me).pss)
            ready = sorted(barrier.glob("ready-*"))
            if len(ready) >= trials and "at_barrier" not in out:
                out["trials"] = [json.loads(p.read_text()) for p in ready]
                workers = {t["pid"] for t in out["trials"]}
                samples = []
                for _ in range(3):
                    per: dict[int, int] = {}
                    samples.append((tree_memory(me, per_process=per), per))
                    time.sleep(0.3)
                mid, per = sorted(samples, key=lambda m: m[0].pss)[1]
                out["at_barrier"] = {"pss": mid.pss, "anon": mid.anon, "file": mid.file, "shmem": mid.shmem,
                                     "procs": mid.n_procs, "driver": per.get(me, 0),
                                     "trials": sum(v for k, v in per.items() if k in workers)}
                (barrier / "release").write_text("")

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    rc = harness_main([str(spec), "--results", str(work / "results"), "--num-cpus", str(trials),
                       "--progress-every", "3600"])
    done.set()
    thread.join()
    out.update(rc=rc, seconds=time.perf_counter() - start)
    if mode == "shared":
        from emoe.data.synthetic import synthetic_spec

        spec_ = synthetic_spec("mosei", seed=0, **sizes(scale))
        out["data_bytes"] = _nbytes(spec_)
    else:
        out["data_bytes"] = data_bytes
    return out


def _nbytes(spec: Any) -> int:
    """Split.nbytes of a synthetic spec without generating it (float32 inputs and labels)."""
    per_sample = (spec.len_text * spec.d_text + spec.len_audio * spec.d_audio
                  + spec.len_vision * spec.d_vision + 1) * 4
    return per_sample * (spec.n_train + spec.n_valid + spec.n_test)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--scale", type=float, default=0.5,
                   help="fraction of MOSEI's sample counts (default 0.5; 1 = 16326/1871/4659)")
    p.add_argument("--trials", type=int, default=4, help="concurrent trials (default 4)")
    p.add_argument("--modes", default="baseline,shared,own", help="comma-separated: baseline, shared, own")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per mode")
    p.add_argument("--child", nargs=2, metavar=("MODE", "WORK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1:
        p.error(f"--scale must be in (0, 1], got {args.scale}")
    if args.trials < 1:
        p.error("--trials must be positive")
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - {"baseline", "shared", "own"})
    if unknown:
        p.error(f"--modes: unknown {', '.join(unknown)}")
    args.modes = modes
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        mode, work = args.child
        result = child(mode, args.scale, args.trials, Path(work), args.timeout)
        print("RESULT " + json.dumps(result), flush=True)
        return 0 if result["rc"] == 0 else 1
    print(machine_note(), flush=True)
    n = sizes(args.scale)
    print(f"MOSEI-sized synthetic set at scale {args.scale:g}: {n['n_train']}/{n['n_valid']}/{n['n_test']} "
          f"samples, aligned 50 steps, 768/74/35 dims; {args.trials} concurrent trials", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        for mode in args.modes:
            proc = subprocess.run([PYTHON, __file__, "--child", mode, tmp, "--scale", str(args.scale),
                                   "--trials", str(args.trials), "--timeout", str(args.timeout)],
                                  cwd=REPO, capture_output=True, text=True, timeout=args.timeout + 120)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{mode}: failed ({proc.returncode})\n{(proc.stdout + proc.stderr)[-3000:]}")
                return 1
            results[mode] = json.loads(line[len("RESULT "):])
            r = results[mode]
            print(f"{mode}: {r['seconds']:.0f} s, {r['at_barrier']['pss'] / 2**30:.2f} GiB at the barrier",
                  flush=True)
    return report(results, args.trials)


def report(results: dict[str, dict[str, Any]], trials: int) -> int:
    """Print the table: memory at the barrier, minus the baseline, in copies of the data."""
    data_bytes = max((r["data_bytes"] for r in results.values()), default=0)
    base = results.get("baseline", {}).get("at_barrier", {}).get("pss")
    rows = []
    for mode, r in results.items():
        m = r["at_barrier"]
        zero_copy = {(t["writeable"], t["owns_memory"]) for t in r.get("trials", [])}
        held = None if base is None or mode == "baseline" else m["pss"] - base
        rows.append([mode, m["procs"], m["pss"] / 2**30, m["driver"] / 2**30, m["trials"] / 2**30,
                     (m["pss"] - m["driver"] - m["trials"]) / 2**30, m["shmem"] / 2**30, r["peak"] / 2**30,
                     "-" if held is None else held / 2**30,
                     "-" if held is None or not data_bytes else held / data_bytes,
                     ", ".join(f"writeable={w} owns={o}" for w, o in sorted(zero_copy))])
    print()
    print(f"one copy of the data: {data_bytes / 2**30:.2f} GiB")
    print(format_table(["mode", "procs", "PSS GiB", "driver", "trials", "Ray", "of which shm", "peak GiB",
                        "held GiB", "copies", "trial's arrays"], rows))
    print(f"\nPSS summed over the driver and all its descendants while {trials} trials hold the data "
          "(median of 3 readings); held = PSS - baseline; copies = held / one copy (target: shared <= 1.3, "
          "own about 4). driver / trials / Ray: PSS of the driver, of the trial workers and of Ray's other "
          "processes (object-store pages count where they are mapped). trial's arrays: a read-only view "
          "owning no memory is a zero-copy read from the object store.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
