"""GPU packing: trials per hour with 1, 2 and 4 trials sharing one GPU (fractional ``resources.gpus``).

The same study runs once per packing through the harness (Ray started once with one GPU): ``--trials``
trials (seeds) of the faithful MOSI configuration (d_model 256, 4 levels, flattened ~196M-weight router,
batch 16, accumulation window 10) on the synthetic 'mosi' preset, ``--epochs`` epochs each, with
``resources.gpus`` 1, 0.5 and 0.25. Ray's fractional GPUs are logical: trials that share the GPU must fit
in its memory together (the faithful configuration needs a few GiB each). Trials per hour are the trials
over the study's wall time (Ray already running; worker start, CUDA start-up and checkpoints included).
Without a CUDA device it prints that it was skipped and exits 0.

    python bench/gpu_packing.py                        # 4 trials x 2 epochs at 1, 2 and 4 per GPU
    python bench/gpu_packing.py --packings 1,2,4,8 --trials 8 --epochs 3
    python bench/gpu_packing.py --cpu-check            # checks the procedure on CPU (figures meaningless)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_note, quiet_harness, write_study

__all__ = ["main"]

FAITHFUL = {"model": {"d_model": 256, "n_heads": 8, "n_levels": 4, "router_input": "flatten"},
            "train": {"lr": 1.0e-4, "batch_size": 16, "update_epochs": 10}}
TINY = {"model": {"d_model": 8, "n_heads": 2, "n_levels": 1, "router_input": "mean"},
        "train": {"lr": 1.0e-3, "batch_size": 64, "device": "cpu"}}


def study(packing: int, trials: int, epochs: int, cpus: float, cpu_check: bool,
          checkpoint_every: int) -> dict[str, Any]:
    base = TINY if cpu_check else FAITHFUL
    return {"name": f"packing_{packing}",
            "data": {"synthetic": {"preset": "tiny" if cpu_check else "mosi", "seed": 0}},
            "base": {"model": dict(base["model"]),
                     "train": {**base["train"], "max_epochs": epochs, "early_stop": epochs}},
            "seeds": list(range(1, trials + 1)), "objective": {"metric": "valid_mae"},
            "scheduler": {"name": "fifo"}, "resources": {"cpus": cpus, "gpus": 1 / packing},
            "max_failures": 0, "checkpoint_every": checkpoint_every}


class PeakGPUMemory(threading.Thread):
    """Polls GPU 0's memory in use (nvidia-smi, every second) and keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(1.0):
            used = gpu_memory_used_mib()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)

    def stop(self) -> float | None:
        self._stop_event.set()
        self.join()
        return self.peak


def gpu_memory_used_mib() -> float | None:
    """Memory in use on GPU 0 according to nvidia-smi (None when it is not available)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", "0"], capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--packings", default="1,2,4", help="trials per GPU, comma-separated (default 1,2,4)")
    p.add_argument("--trials", type=int, default=4, help="trials per packing (default 4)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="the study's checkpoint_every (default 1, the harness default; 0 = none)")
    p.add_argument("--cpu-check", action="store_true",
                   help="CPU, logical GPU, tiny model: checks the script (figures meaningless)")
    args = p.parse_args(argv)
    try:
        args.packings = [int(x) for x in args.packings.split(",")]
    except ValueError:
        p.error(f"--packings: expected comma-separated integers, got {args.packings!r}")
    if min([*args.packings, args.trials, args.epochs]) < 1 or args.checkpoint_every < 0:
        p.error("--packings, --trials and --epochs must be positive, --checkpoint-every >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_check:
        print("gpu_packing: no CUDA device on this machine (torch.cuda.is_available() is False); skipped")
        return 0
    import ray

    print(machine_note(), flush=True)
    device = "CPU check (logical GPU, tiny model: figures mean nothing)" if args.cpu_check else (
        f"{torch.cuda.get_device_name(0)}, "
        f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    cpus = os.cpu_count() or 1
    print(f"device: {device}; {args.trials} trials x {args.epochs} epochs per packing", flush=True)
    ray.init(address="local", num_cpus=cpus, num_gpus=1, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
            log = Path(tmp) / "harness.log"
            for packing in args.packings:
                per_trial_cpus = max(1, cpus // packing)
                spec = write_study(Path(tmp) / f"packing_{packing}.yaml",
                                   study(packing, args.trials, args.epochs, per_trial_cpus, args.cpu_check,
                                         args.checkpoint_every))
                peak = PeakGPUMemory()
                peak.start()
                start = time.perf_counter()
                rc = quiet_harness([str(spec), "--results", str(Path(tmp) / "results"),
                                    "--progress-every", "3600"], log)
                wall = time.perf_counter() - start
                peak_mib = peak.stop()
                if rc != 0:
                    print(f"packing {packing}: the study exited with {rc}; its output:\n"
                          f"{log.read_text()[-3000:]}")
                    return 1
                import pandas as pd

                trials = pd.read_parquet(Path(tmp) / "results" / f"packing_{packing}" / "trials")
                completed = int((trials["status"] == "completed").sum())
                rows.append([packing, 1 / packing, per_trial_cpus, completed, wall,
                             float(trials["time_per_epoch_s"].median()),
                             "-" if peak_mib is None else f"{peak_mib / 1024:.1f}", 3600 * completed / wall])
                print(f"packing {packing}: {completed} trials in {wall:.0f} s", flush=True)
    finally:
        ray.shutdown()
    base = rows[0][-1]
    table = [[*r, r[-1] / base] for r in rows]
    print()
    print(format_table(["trials/GPU", "gpus", "cpus", "completed", "wall s", "s/epoch (median)",
                        "peak GPU GiB", "trials/hour", f"vs {rows[0][0]}/GPU"], table))
    best = max(table, key=lambda r: r[-2])
    print(f"\nbest packing: {best[0]} trials per GPU, {best[-2]:.0f} trials/hour on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
