"""Cost of a study before running it: measured seconds per epoch x epochs x trials, over parallel slots.

``measure_epoch_s`` trains a configuration for three epochs on a slice of the data (the fastest of the
second and third epochs is timed, the first pays for warm-up) and scales by the split sizes, counting an
evaluated sample as a third of a trained one (a forward pass without backward). It is an estimate for an
otherwise idle machine, printed as such: trials that share busy cores take longer.
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

__all__ = ["CostEstimate", "estimate_cost", "format_duration", "measure_epoch_s", "parallel_slots"]

_EVAL_WEIGHT = 1 / 3
_MAX_MEASURED = 4


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


def measure_epoch_s(cfg: EMOEConfig, data: DataSet, *, threads: int = 1, batches: int = 16) -> float:
    """Estimated seconds per epoch of ``cfg`` on ``data``, measured on a slice with ``threads`` threads."""
    import torch

    from emoe.train import train_emoe

    t = cfg.train
    n_tr = min(len(data.train), batches * t.batch_size)
    n_ev = min(len(data.valid), len(data.test), t.eval_batch_size)
    small = dataclasses.replace(data, train=_head(data.train, n_tr), valid=_head(data.valid, n_ev),
                                test=_head(data.test, n_ev))
    quick = dataclasses.replace(cfg, train=dataclasses.replace(t, max_epochs=3, early_stop=10, device="cpu"))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        start = time.perf_counter()
        result = train_emoe(quick, small)
        fallback = (time.perf_counter() - start) / 3
    finally:
        torch.set_num_threads(before)
    timed = min(r.time_s for r in result.history[1:]) if len(result.history) > 1 else fallback
    full = _work(len(data.train), len(data.valid) + len(data.test))
    return float(timed * full / _work(n_tr, 2 * n_ev))


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
    """Trial-time and wall-clock estimate of a study (upper bounds: early stopping ends trials sooner)."""

    trials: int
    epochs: int  # max epochs per trial
    epoch_s: float | None  # mean measured seconds per epoch (None when not measured)
    slots: int

    @property
    def trial_time_s(self) -> float | None:
        return None if self.epoch_s is None else self.trials * self.epochs * self.epoch_s

    @property
    def wall_s(self) -> float | None:
        """Waves of ``slots`` trials, each wave as long as one trial."""
        if self.epoch_s is None:
            return None
        return math.ceil(self.trials / self.slots) * self.epochs * self.epoch_s


def _cost_key(cfg: EMOEConfig) -> tuple[object, ...]:
    t = cfg.train
    return (cfg.model, t.batch_size, t.update_epochs, t.fast_path, t.bf16, cfg.loss.task)


def estimate_cost(configs: list[EMOEConfig], data: DataSet, *, trials: int, slots: int, threads: int,
                  measure: bool = True) -> CostEstimate:
    """Measure up to four distinct (cost-relevant) configurations and extrapolate to the study."""
    epochs = max((c.train.max_epochs for c in configs), default=0)
    if not measure or not configs:
        return CostEstimate(trials, epochs, None, slots)
    distinct: dict[tuple[object, ...], EMOEConfig] = {}
    for c in configs:
        distinct.setdefault(_cost_key(c), c)
    times = [measure_epoch_s(c, data, threads=threads) for c in list(distinct.values())[:_MAX_MEASURED]]
    return CostEstimate(trials, epochs, float(np.mean(times)), slots)
