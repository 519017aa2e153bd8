"""Cost of a study before running it: measured epochs plus the fixed costs around them.

``measure_epoch_s`` trains a configuration for three epochs on two slices of the data, the same
evaluation samples with a quarter of the training samples and with all of the slice's (the mean of the
second and third epochs is timed, the first pays for warm-up; an epoch's time includes its evaluation on
validation and test). The difference between the two gives the seconds per training sample, the rest of
the epoch is evaluation and per-epoch work, and each is scaled to its split sizes. (A fixed ratio of
evaluation to training cost, a third, made the estimate of studies/distill_weight.yaml's epoch 0.50 s
against 0.67 s measured: evaluation costs far less than that there, so a small slice, mostly evaluation,
looked cheap.) Trials that share the machine's cores slow each other (``SHARED_CORES``); trials that
share a GPU take turns (``sharing_factor``); GPU trials are measured on the driver's GPU when it has one.
``CostEstimate`` adds what a study pays beside its epochs: the driver's preparation (measured in the same
command: spec, data, plan), and the constants below for the driver's imports, Ray's start, the workers'
first trial, each trial's own overhead, the end and the report. It is an upper bound for a machine no busier than the one the constants were measured on
(every trial counted at its ``max_epochs``); when the load already exceeds the cores, a note says so,
since trials that share busy cores take longer.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from emoe.config import EMOEConfig
from emoe.data.arrays import DataSet, Split
from harness.study.devices import cuda_device_count

__all__ = ["CONFIRM_START_S", "END_S", "IMPORT_S", "REPORT_S", "SHARED_CORES", "STARTUP_S", "TRIAL_S", "WARMUP_S",
           "CostEstimate", "busy_note", "estimate_cost", "format_duration", "measure_epoch_s", "parallel_slots",
           "sharing_factor"]

_EVAL_WEIGHT = 1 / 3  # evaluation per sample against training, only where one slice must do (``measure_epoch_s``)
_MAX_MEASURED = 4

# Fixed costs of a study beside its epochs, in seconds: the largest of five repeats of
# `bench/run_overheads.py` (studies/smoke.yaml) on this project's 2-core machine while it was otherwise idle
# (load average under 3), 2026-11-30 at 580a560, rounded up (bench/README.md has the table). A busier machine takes
# longer: ``busy_note`` says so when the load already exceeds the cores (at a load of 15-20 these parts
# took three to seven times as long).
#: The driver's interpreter start and imports (pydantic, the harness; no torch), before it reads the study:
#: 0.31-0.36 s in five repeats of ``python -c "import harness.run"`` on 2026-12-01, when torch left the driver.
IMPORT_S = 0.5
#: Ray's local runtime, Tune's setup and the trial workers, from the driver's plan to the first trial.
STARTUP_S = 8.0
#: A fresh worker's first trial beyond its epochs (imports, first kernels); the workers warm up at once.
WARMUP_S = 1.0
#: Each trial beyond its epochs (model, rows, checkpoints, Tune's scheduling between trials).
TRIAL_S = 0.1
#: From the last trial to the exit: reconciling rows, the summary, Ray's shutdown (which a report overlaps).
END_S = 2.0
#: The figures and tables of ``report: true`` (mostly plotting).
REPORT_S = 5.0
#: A confirmation's own start (a second Tune run in the same Ray runtime, fresh workers): 2.8 s between
#: the last tuning trial's end and the first confirmation trial's start in studies/distill_weight.yaml.
CONFIRM_START_S = 3.0
#: Seconds per epoch of CPU trials that run side by side on all the cores, against one alone: the epochs of
#: studies/distill_weight.yaml took 0.76 s (median) two at a time on the idle 2-core machine, 0.67 s alone.
SHARED_CORES = 1.15


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m10s``, ``42s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _head(split: Split, n: int) -> Split:
    return dataclasses.replace(split, **{f.name: getattr(split, f.name)[:n] for f in dataclasses.fields(split)
                                         if isinstance(getattr(split, f.name), np.ndarray)})


def _work(n_train: int, n_eval: int) -> float:
    return n_train + _EVAL_WEIGHT * n_eval


def _timed_epoch(cfg: EMOEConfig, data: DataSet, n_train: int, n_eval: int, threads: int, device: str) -> float:
    """Seconds of one epoch of ``cfg`` on the first ``n_train`` training and ``n_eval`` validation and test
    samples: the mean of the second and third of three epochs (the first pays for warm-up)."""
    import torch

    from emoe.train import train_emoe

    t = cfg.train
    small = dataclasses.replace(data, train=_head(data.train, n_train), valid=_head(data.valid, n_eval),
                                test=_head(data.test, n_eval))
    quick = dataclasses.replace(cfg, train=dataclasses.replace(t, max_epochs=3, early_stop=10, device=device))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        start = time.perf_counter()
        result = train_emoe(quick, small)
        fallback = (time.perf_counter() - start) / 3
    finally:
        torch.set_num_threads(before)
    later = [r.time_s for r in result.history[1:]]
    return float(np.mean(later)) if later else fallback


def measure_epoch_s(cfg: EMOEConfig, data: DataSet, *, threads: int = 1, batches: int = 16,
                    device: str = "cpu") -> float:
    """Estimated seconds per epoch of ``cfg`` on ``data``, measured on slices on ``device`` (``threads``
    CPU threads)."""
    bs = cfg.train.batch_size
    n_tr = min(len(data.train), batches * bs)
    n_ev = min(len(data.valid), len(data.test), cfg.train.eval_batch_size)
    few = min(n_tr, max(bs, n_tr // 4))
    timed = _timed_epoch(cfg, data, n_tr, n_ev, threads, device)
    if few == n_tr:  # too little training data for two slices: one, with evaluation a third of training
        full = _work(len(data.train), len(data.valid) + len(data.test))
        return float(timed * full / _work(n_tr, 2 * n_ev))
    per_train = max(0.0, (timed - _timed_epoch(cfg, data, few, n_ev, threads, device)) / (n_tr - few))
    rest = max(0.0, timed - per_train * n_tr)  # evaluation of 2 x n_ev samples, and per-epoch work
    return float(per_train * len(data.train) + rest * (len(data.valid) + len(data.test)) / (2 * n_ev))


def parallel_slots(cpus_per_trial: float, gpus_per_trial: float, *, cpus: int | None = None,
                   gpus: int = 0, concurrency: int | None = None) -> int:
    """How many trials run at once on this machine (or ``cpus``/``gpus``), capped by ``concurrency``."""
    slots = int((cpus or os.cpu_count() or 1) // cpus_per_trial)
    if gpus_per_trial:
        slots = min(slots, int(gpus // gpus_per_trial))
    if concurrency:
        slots = min(slots, concurrency)
    return max(1, slots)


@dataclass
class CostEstimate:
    """Wall-clock estimate of a study: its trials' epochs (upper bounds: early stopping ends trials
    sooner) in waves of ``slots`` trials, plus the fixed costs around them."""

    trials: int
    epochs: int  # max epochs per trial
    epoch_s: float | None  # mean measured seconds per epoch (None when not measured)
    slots: int
    prepare_s: float | None = None  # the driver's spec, data and plan, measured by the caller
    report: bool = False  # whether figures and tables are built at the end
    confirm_trials: int = 0  # confirmation trials, run after the tuning trials have all finished
    sharing: float = 1.0  # how much longer an epoch takes in a wave than alone (``sharing_factor``)
    note: str = ""  # how the epoch was measured and counted, beyond "training and evaluation"

    @property
    def wave_epoch_s(self) -> float | None:
        """Seconds per epoch of a trial in a wave: measured alone, times ``sharing``."""
        return None if self.epoch_s is None else self.epoch_s * self.sharing

    @property
    def confirm_waves(self) -> int:
        return math.ceil(self.confirm_trials / self.slots)

    @property
    def waves(self) -> int:
        """Waves of trials: the tuning trials', then the confirmation trials' (they wait for the ranking)."""
        return math.ceil(self.trials / self.slots) + self.confirm_waves

    @property
    def trial_time_s(self) -> float | None:
        """Training time summed over trials (CPU-slot seconds), epochs only."""
        n = self.trials + self.confirm_trials
        return None if self.wave_epoch_s is None else n * self.epochs * self.wave_epoch_s

    @property
    def fixed_parts(self) -> dict[str, float]:
        """The costs that do not scale with epochs, by name (seconds of wall-clock time)."""
        parts = {"driver start": IMPORT_S + (self.prepare_s or 0.0),
                 "Ray and workers start": STARTUP_S + WARMUP_S, "per-trial overhead": self.waves * TRIAL_S,
                 "end": END_S}
        if self.confirm_trials:
            parts["confirmation start"] = CONFIRM_START_S
        if self.report:
            parts["report"] = REPORT_S
        return parts

    @property
    def parts(self) -> dict[str, float]:
        """Every part of the wall-clock estimate (training only when measured)."""
        training: dict[str, float] = {}
        epoch_s = self.wave_epoch_s
        if epoch_s is not None:
            tuning_waves = self.waves - self.confirm_waves
            training["training"] = tuning_waves * self.epochs * epoch_s
            if self.confirm_trials:
                training["confirmation"] = self.confirm_waves * self.epochs * epoch_s
        return {**training, **self.fixed_parts}

    @property
    def wall_s(self) -> float:
        """Waves of ``slots`` trials, each as long as one trial, plus the fixed costs."""
        return sum(self.parts.values())


def sharing_factor(slots: int, gpus_per_trial: float) -> tuple[float, str]:
    """How much longer each trial's epoch takes when ``slots`` trials run at once, and what to say of it.

    CPU trials side by side share the cores and the memory: ``SHARED_CORES``. Trials that share one GPU
    (``resources.gpus`` below 1) are time-sliced: counted as if they took turns, an upper bound (processes
    sharing a GPU do not overlap their kernels, and bench/gpu_packing.py measures what packing gains)."""
    if gpus_per_trial <= 0:
        return (SHARED_CORES, f"x {SHARED_CORES:g} for trials sharing the cores") if slots > 1 else (1.0, "")
    per_gpu = min(slots, math.floor(1 / gpus_per_trial + 1e-9)) if gpus_per_trial < 1 else 1
    if per_gpu <= 1:
        return 1.0, ""
    return float(per_gpu), f"x {per_gpu} for {per_gpu} trials taking turns on one GPU"


def busy_note(cpus: int | None = None) -> str | None:
    """A warning when other processes already use more than this machine's cores (None otherwise)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    cores = cpus or os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"this machine is busy now (load {load:.1f} on {os.cpu_count()} cores): trials sharing the cores "
            "will take longer than this estimate")


def _cost_key(cfg: EMOEConfig) -> tuple[object, ...]:
    t = cfg.train
    return (cfg.model, t.batch_size, t.update_epochs, t.fast_path, t.window_forward, t.bf16, cfg.loss.task)


def estimate_cost(configs: list[EMOEConfig], data: DataSet, *, trials: int, slots: int, threads: int,
                  measure: bool = True, prepare_s: float | None = None, report: bool = False,
                  confirm_trials: int = 0, gpus_per_trial: float = 0.0) -> CostEstimate:
    """Measure up to four distinct (cost-relevant) configurations and extrapolate to the study
    (``confirm_trials``: its confirmation trials, timed like the tuning trials). GPU trials
    (``gpus_per_trial`` > 0) are measured on this machine's GPU when it has one, else on its CPU (then
    the estimate is far above what a GPU will take, and says so)."""
    epochs = max((c.train.max_epochs for c in configs), default=0)
    sharing, note = sharing_factor(slots, gpus_per_trial)
    device = "cuda" if gpus_per_trial > 0 and cuda_device_count() else "cpu"
    if gpus_per_trial > 0 and device == "cpu":
        note = ", ".join(filter(None, [note, "GPU trials measured on this machine's CPU: they will be faster"]))
    elif device == "cuda":
        note = ", ".join(filter(None, ["on this machine's GPU", note]))
    if not measure or not configs:
        return CostEstimate(trials, epochs, None, slots, prepare_s, report, confirm_trials, sharing, note)
    distinct: dict[tuple[object, ...], EMOEConfig] = {}
    for c in configs:
        distinct.setdefault(_cost_key(c), c)
    times = [measure_epoch_s(c, data, threads=threads, device=device) for c in list(distinct.values())[:_MAX_MEASURED]]
    return CostEstimate(trials, epochs, float(np.mean(times)), slots, prepare_s, report, confirm_trials, sharing,
                        note)
