"""Every GPU figure of the project in one call, written as one Markdown table.

Rows, in this order: the main job (``studies/distill_weight.yaml`` with ``resources.gpus``, then with
stacks, ``resources.stack: auto`` and ``12`` (all of a phase's trials in one model), checking every member
against its unstacked run as ``bench/stacked_study.py`` does, each with the run's own phase timings); the model step (training samples/s of forward + backward + Adam,
accumulation window 10, batch 16) for the faithful MOSI configuration (207.6M parameters, flattened router)
and the small one (0.7M), each eager (fast path, float32, a window in one forward), per batch
(``window_forward: false``), ``compile=default``, ``compile=graphs`` (both per batch), bf16 (bf16 working
weights, float32 masters; on the faithful configuration also with graphs, against float32 graphs) and stacked seeds (K members as one vmapped model, member-samples/s); GPU
packing 1/2/4/8 trials per GPU (``bench/gpu_packing.py``). Every step runs under its own time limit, so the whole report fits in about
6 minutes on one H200; a step that fails or times out is a row saying so, never a missing number. The whole
run keeps to ``--deadline-s`` (a step gets at most the time left; one that cannot start in time is a
"skipped" row) and the report file is rewritten after every row, so a run cut short from outside still
leaves every figure measured so far.

    python bench/gpu_report.py --out gpu_report.md          # on a CUDA machine
    python bench/gpu_report.py --cpu-check                  # same code paths on CPU, tiny sizes (~2 min)

``--cpu-check`` figures mean nothing (CPU, tiny model): it only checks that every path runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent


def _configs(cpu_check: bool) -> dict[str, Any]:
    from emoe.config import ModelConfig

    if cpu_check:
        tiny = ModelConfig(d_text=12, d_audio=5, d_vision=6, len_text=8, len_audio=8, len_vision=8, d_model=16,
                           n_heads=2, n_levels=1, kernel_l=3, kernel_v=3, kernel_a=3)
        return {"faithful": tiny, "small": dataclasses.replace(tiny, router_input="mean", d_model=8)}
    mosi = ModelConfig(d_text=768, d_audio=5, d_vision=20, len_text=50, len_audio=50, len_vision=50)
    return {"faithful": mosi, "small": dataclasses.replace(mosi, d_model=64, n_heads=4, n_levels=2,
                                                           router_input="mean")}


def _step_figure(args: tuple[str, str, bool, str]) -> tuple[float, float, str]:
    """(samples/s, warm-up s, note) of one model-step variant, measured in this (child) process."""
    config, variant, cpu_check, device_name = args
    import torch
    from model_step import random_split

    from emoe.capture import TrainStep
    from emoe.config import EMOEConfig, TrainConfig
    from emoe.dropout import PlannedDropout
    from emoe.model import EMOE
    from emoe.precision import BF16Weights
    from emoe.stack import _Stack
    from emoe.stack import _train_epoch as stacked_epoch
    from emoe.train import dropout_generator, make_optimizer, resolve_device, train_epoch

    device = resolve_device(device_name)
    model_cfg = _configs(cpu_check)[config]
    batch, window = (8, 2) if cpu_check else (16, 10)
    windows = 1 if cpu_check else (2 if config == "faithful" else 4)
    n = batch * window * windows
    extra: dict[str, Any] = {"compile": {"compile": "default"}, "graphs": {"compile": "graphs"},
                             "bf16": {"bf16": True, "allow_cpu_bf16": True},
                             "bf16 + graphs": {"bf16": True, "allow_cpu_bf16": True, "compile": "graphs"},
                             "stacked=8 + graphs": {"compile": "graphs"},
                             "per batch": {"window_forward": False}}.get(variant, {})
    train = TrainConfig(batch_size=batch, update_epochs=window, device=device_name, **extra)
    cfg = EMOEConfig(model=model_cfg, train=train)
    data, warm = random_split(model_cfg, n, seed=1), random_split(model_cfg, batch * window, seed=2)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if variant.startswith("stacked"):
        k = int(variant.split("=")[1].split()[0])
        cfgs = [dataclasses.replace(cfg, train=dataclasses.replace(train, seed=1111 + i)) for i in range(k)]
        stack = _Stack(cfgs, device)

        def run(split: Any) -> None:
            stacked_epoch(stack, split, cfg)
        per_sample = k
    else:
        torch.manual_seed(0)
        model = EMOE(model_cfg).to(device)
        precision = BF16Weights(model) if variant == "bf16" else None
        opt = make_optimizer(model, cfg, None if precision is None else precision.masters)
        dropout = PlannedDropout([dropout_generator(0, device)], device)
        model.set_dropout_source(dropout.feed)
        step = TrainStep(model, cfg, device, dropout)
        gen = torch.Generator().manual_seed(0)

        def run(split: Any) -> None:
            out = train_epoch(model, split, cfg, opt, generator=gen, device=device, step=step, precision=precision)
            if out.error:
                raise RuntimeError(out.error)
        per_sample = 1
    start = time.perf_counter()
    run(warm)  # compilation, capture, allocations, optimiser state
    sync()
    warm_s = time.perf_counter() - start
    # the median over repeated epochs, at least 3 and for at least a second and a half (one epoch of these
    # sizes takes a tenth of a second on an H200: single ones differed by a third from run to run)
    rates: list[float] = []
    until = time.perf_counter() + (0.2 if cpu_check else 1.5)
    while len(rates) < 3 or (time.perf_counter() < until and len(rates) < 100):
        start = time.perf_counter()
        run(data)
        sync()
        rates.append(per_sample * n / (time.perf_counter() - start))
    rate = statistics.median(rates)
    note = f"median of {len(rates)} epochs" + ("; member-samples/s" if per_sample > 1 else "")
    if "graphs" in variant and device.type != "cuda":
        note += "; no CUDA: ran eagerly (fallback)"
    return rate, warm_s, note


def _timed(fn: Any, args: Any, limit: float) -> tuple[str, Any]:
    """Run fn(args) in a fresh process (spawn: CUDA state and compile caches stay per figure) within limit."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        job = pool.apply_async(fn, (args,))
        try:
            return "ok", job.get(timeout=limit)
        except mp.TimeoutError:
            return "timeout", f"over {limit:.0f} s"
        except Exception as exc:  # a failed figure is reported (its whole traceback in the log), the report goes on
            print(f"--- {getattr(fn, '__name__', fn)}{args} failed:\n{exc.__cause__ or exc}", flush=True)
            return "error", f"{type(exc).__name__}: {str(exc)[:160]}"


def _command(cmd: list[str], limit: float, env: dict[str, str] | None = None) -> tuple[str, float, str]:
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=REPO,
                             env={**os.environ, **(env or {}),
                                  "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    except subprocess.TimeoutExpired:
        return "timeout", limit, f"over {limit:.0f} s"
    wall = time.perf_counter() - start
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:  # the whole story in the log, the row keeps its end
        print(f"--- {' '.join(cmd)} exited {out.returncode}:\n{text[-6000:]}", flush=True)
    return ("ok" if out.returncode == 0 else f"exit {out.returncode}"), wall, text


class Report:
    """The report's rows, printed as they come and written to ``out`` after each, within a deadline."""

    HEADER = ("| figure | variant | value (samples/s unless said) | ratio (to eager; packing: to 1 per GPU; main "
              "job: to unstacked) | warm-up s | note |\n|---|---|---|---|---|---|")

    def __init__(self, title: str, out: Path | None, deadline_s: float, torch_version: str) -> None:
        self.title, self.out, self.torch_version = title, out, torch_version
        self.began = time.perf_counter()
        self.deadline = self.began + deadline_s
        self.rows: list[list[str]] = []

    def limit(self, wanted: float) -> float | None:
        """The time a step may take: ``wanted``, or what is left before the deadline (None: too little)."""
        left = self.deadline - time.perf_counter() - 5  # a margin to write the report
        return None if left < min(wanted, 10) else min(wanted, left)

    def add(self, row: list[str]) -> None:
        self.rows.append(row)
        print(" | ".join(row), flush=True)
        self.write()

    def write(self) -> None:
        if self.out is not None:
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(self.text())
            tmp.replace(self.out)

    def skipped(self, figure: str, variant: str) -> None:
        self.add([figure, variant, "-", "-", "-", "skipped: the report's deadline (--deadline-s) is near"])

    def text(self) -> str:
        lines = [f"# GPU report: {self.title}", "",
                 f"torch {self.torch_version}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                 f"{time.perf_counter() - self.began:.0f} s in all", "", self.HEADER]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows]) + "\n"


def _phases(info_path: Path) -> str:
    """The run's phases from its study.json (``harness.timings``), e.g. ``Ray start 3.1 s, tuning 9.0 s ...``."""
    from harness.timings import Timings

    try:
        recorded = json.loads(info_path.read_text()).get("timings") or {}
    except (OSError, ValueError):
        return "no timings recorded"
    return Timings.from_record(recorded).describe() or "no timings recorded"


def _epoch_times(study_dir: Path) -> str:
    """Each phase's epoch seconds from the run's ``epochs`` rows: the first epoch (where a trial's captures,
    CUDA's start and the first batches' allocations fall) and the median of the later ones, e.g.
    ``epochs tune 3.61 then 0.28 s, confirm 1.90 then 0.21 s``."""
    import pandas as pd

    try:
        epochs = pd.read_parquet(study_dir / "epochs", columns=["phase", "epoch", "time_s"])
    except (OSError, ValueError) as exc:
        return f"no epoch times ({type(exc).__name__})"
    parts = []
    for phase, rows in epochs.groupby("phase", sort=False):
        first = rows.loc[rows["epoch"] == 1, "time_s"].median()
        later = rows.loc[rows["epoch"] > 1, "time_s"].median()
        parts.append(f"{phase} {first:.2f} then {later:.2f} s" if rows["epoch"].max() > 1 else f"{phase} {first:.2f} s")
    return "epochs " + ", ".join(parts)


def _main_job(cpu_check: bool, report: Report, keys: set[str] | None = None) -> None:
    """The main job alone and with stacks (each configuration's seeds as one model, ``resources.stack``; on a
    GPU also every trial of a phase as one model), and whether every member's rows and metrics match its
    unstacked run (``bench/stacked_study.py``). ``keys``: the variants to run (plain, stack, phase, graphs; None:
    all)."""
    from stacked_study import compare, describe, tables

    base = (["--set", "base.train.max_epochs=1", "--set", "seeds=[1111]", "--set", "report=false"] if cpu_check
            else ["--set", "resources.gpus=0.25"])
    # the CPU check has one seed per configuration: it stacks the 4 grid points (they differ in a loss weight)
    stack = "4" if cpu_check else "auto"
    variants = [("plain", "resources.gpus" + ("" if cpu_check else "=0.25"), []),
                ("stack", f"with stacks (resources.stack={stack})", ["--set", f"resources.stack={stack}"])]
    if not cpu_check:  # every trial of a phase in one model (the 4 grid points differ in a loss weight only):
        # one worker process and CUDA context per phase instead of one per configuration
        variants.append(("phase", "one stack per phase (resources.stack=12)", ["--set", "resources.stack=12"]))
        variants.append(("graphs", "one stack per phase, with graphs (resources.stack=12, train.compile=graphs)",
                         ["--set", "resources.stack=12", "--set", "base.train.compile=graphs"]))
        # the same with no worker importing the trial code ahead (docs/cluster.md): what that saves
        variants.append(("graphs-noahead", "the same, no worker importing ahead (EMOE_HARNESS_PRELOAD_WORKERS=0)",
                         ["--set", "resources.stack=12", "--set", "base.train.compile=graphs"]))
    found, walls = {}, {}
    with tempfile.TemporaryDirectory(prefix="gpu-report-") as tmp:
        for k, (key, name, extra) in enumerate(variants):
            if keys is not None and key not in keys:
                continue
            limit = report.limit(240 if cpu_check else 120)  # CPU check: a busy 2-core machine
            if limit is None:
                report.skipped("main job (distill_weight.yaml)", name)
                continue
            out = Path(tmp) / str(k)
            cmd = [sys.executable, "-m", "harness.run", "studies/distill_weight.yaml", "--results", str(out), *base,
                   *extra]
            env = {"EMOE_HARNESS_PRELOAD_WORKERS": "0"} if key.endswith("-noahead") else None
            status, wall, text = _command(cmd, limit, env)
            note = status if status == "ok" else f"{status}: {text[-160:]}"
            if status == "ok":
                walls[k], found[k] = wall, tables(out / "distill_weight")
            if k > 0 and 0 in found and k in found:
                note = f"members against the unstacked run: {describe([compare(found[0], found[k])])}"
            if status == "ok":  # where the wall time went (the run's own phases, study.json)
                note += "; " + _phases(out / "distill_weight" / "study.json") + "; " + _epoch_times(out / "distill_weight")
            ratio = f"{walls[0] / walls[k]:.2f}x" if k in walls and 0 in walls else "-"
            report.add(["main job (distill_weight.yaml)", name, f"{wall:.1f} s wall", ratio, "-", note])


_FIRST_STEP = ("import harness.tune.stacked, emoe.stack, emoe.dynamo_free, torch; {prepare}"
               "p = torch.nn.Parameter(torch.zeros(4, device='{{device}}')); p.grad = torch.ones_like(p); "
               "{adam}([p], lr=0.1).step(); print(p.sum().item())")

#: What a trial's fresh worker process pays before its first epoch, part by part (each in a new interpreter).
_START_STEPS = {
    "python": "pass",
    "import torch": "import torch",
    "import a trial's code": "import harness.tune.stacked, emoe.stack",
    # the driver imports no torch (tests/harness/test_driver_imports.py): what its start costs on this host
    "import the driver's code": "import harness.run, harness.tune.runner, reports.build",
    "import torch, first tensor on the device": "import torch; torch.zeros(1, device='{device}'); "
                                                "torch.cuda.synchronize() if '{device}' == 'cuda' else None",
    # the first torch.optim optimizer imports torch._dynamo (its methods are wrapped by torch._disable_dynamo)
    "import torch, first Adam": "import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])",
    # a trial's first optimizer step, with torch's Adam, then as a trial process takes it (emoe.dynamo_free)
    "a trial's code, first step of torch's Adam": _FIRST_STEP.format(prepare="", adam="torch.optim.Adam"),
    "a trial's code, first step as a trial takes it": _FIRST_STEP.format(
        prepare="from emoe.dynamo_free import avoid_dynamo; avoid_dynamo(); ", adam="emoe.dynamo_free.Adam"),
}


def _process_start(device: str, report: Report) -> None:
    """Rows of what a fresh process takes to start, import a trial's code and reach the device: on the H200
    each Tune run's first trial ran 5.8 s after the run began (2.7 s on a 2-core CPU)."""
    for name, code in _START_STEPS.items():
        limit = report.limit(60)
        if limit is None:
            report.skipped("process start", name)
            continue
        walls = []
        for _ in range(3):  # the first pays the file cache; the median is what a later worker pays
            status, wall, text = _command([sys.executable, "-c", code.format(device=device)], limit)
            if status != "ok":
                break
            walls.append(wall)
        value = f"{statistics.median(walls):.2f} s" if len(walls) == 3 else "-"
        note = (f"median of 3 fresh processes ({', '.join(f'{w:.2f}' for w in walls)})" if len(walls) == 3 else
                f"{status}: {text[-160:]}")
        report.add(["process start", name, value, "-", "-", note])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--cpu-check", action="store_true", help="CPU, tiny sizes: checks every path (~2 min)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here (default: print only)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: main, start, step, packing")
    p.add_argument("--only", default="",
                   help="comma list of the rows to run, by config:variant for the model step (faithful:graphs, "
                        "small:stacked=8) and main:VARIANT for the main job (main:plain, main:stack, main:phase, "
                        "main:graphs, main:graphs-noahead), start for the process start rows, packing for GPU "
                        "packing; default: every row")
    p.add_argument("--deadline-s", type=float, default=540,
                   help="the whole run's time limit: steps that cannot finish before it are skipped (default 540)")
    args = p.parse_args(argv)
    import torch

    if not args.cpu_check and not torch.cuda.is_available():
        print("gpu_report: no CUDA device (use --cpu-check to check the paths on CPU)")
        return 2
    device = "cpu" if args.cpu_check else "cuda"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    what = "CPU check (tiny sizes: figures mean nothing)" if args.cpu_check else torch.cuda.get_device_name(0)
    report = Report(what, args.out, args.deadline_s, torch.__version__)
    if "main" not in skip:  # first: the headline figure must not be the one the deadline skips
        _main_job(args.cpu_check, report, None if not only else {o[5:] for o in only if o.startswith("main:")})
    if "start" not in skip and (not only or "start" in only):
        _process_start(device, report)
    if "step" not in skip:
        variants = ["eager", "per batch", "compile", "graphs", "bf16"]
        plan = [(c, v) for c in ("faithful", "small") for v in variants]
        plan += [("faithful", "bf16 + graphs"), ("small", "stacked=8"), ("small", "stacked=8 + graphs"),
                 ("faithful", "stacked=2")]
        plan = [(c, v) for c, v in plan if not only or f"{c}:{v}" in only]
        measured: dict[tuple[str, str], float] = {}  # samples/s of each config's eager and graphs rows
        for config, variant in plan:
            compiled = variant in ("compile", "graphs")  # compilation is slow: a longer limit
            limit = report.limit((120 if compiled else 60) if args.cpu_check else (75 if compiled else 30))
            if limit is None:
                report.skipped(f"model step, {config}", variant)
                continue
            status, value = _timed(_step_figure, (config, variant, args.cpu_check, device), limit)
            if status == "ok":
                rate, warm_s, note = value
                if variant in ("eager", "graphs"):
                    measured[(config, variant)] = rate
                if variant == "bf16 + graphs" and (config, "graphs") in measured:  # the bf16 ratio
                    note = f"{rate / measured[(config, 'graphs')]:.2f}x float32 graphs" + (f"; {note}" if note else "")
                ratio = f"{rate / measured[(config, 'eager')]:.2f}x" if (config, "eager") in measured else "-"
                report.add([f"model step, {config}", variant, f"{rate:,.0f}", ratio, f"{warm_s:.1f}", note])
            else:
                report.add([f"model step, {config}", variant, "-", "-", "-", f"{status}: {value}"])
    if "packing" not in skip and (not only or "packing" in only):
        limit = report.limit(60 if args.cpu_check else 150)
        if limit is None:
            report.skipped("GPU packing", "1/2/4/8")
        else:
            cmd = [sys.executable, "bench/gpu_packing.py", "--packings", "1,2" if args.cpu_check else "1,2,4,8"]
            cmd += ["--cpu-check", "--trials", "2", "--epochs", "1"] if args.cpu_check else ["--trials", "8"]
            status, wall, text = _command(cmd, limit)
            table = [line for line in text.splitlines() if line.strip().split(" ")[0].isdigit()]
            for line in table:
                cells = line.split()
                report.add(["GPU packing", f"{cells[0]} per GPU", f"{float(cells[-2]):,.0f}", f"{cells[-1]}x", "-",
                            "trials/hour"])
            if status != "ok" or not table:
                report.add(["GPU packing", "1/2/4/8", "-", "-", f"{wall:.0f}", f"{status}: {text[-160:]}"])
    report.write()
    print("\n" + report.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
