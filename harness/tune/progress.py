"""Live progress of a study: one compact line per event instead of Tune's status tables.

    [  1m02s] 5/15 done (4 completed, 1 pruned) | 2 running | 8 pending | best single trial valid_mae \
0.8123 (distill_weight=0.25, seed 1112) | ~3m10s left

"best single trial" is one trial (one seed); the end-of-study summary ranks configurations by their mean
over seeds instead. On a resumed study the trials recorded by earlier runs count as done. Lines are
printed when a trial finishes or fails, and at most every ``interval_s`` otherwise. The time left is the
remaining trials over the rate at which this run has finished trials so far. Counts are of study trials:
a stack (``resources.stack``) counts once per member, running or done.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ray import tune

from harness.results.sink import ResultStore
from harness.results.summary import last_line
from harness.study.cost import format_duration
from harness.study.stacks import Stack, members_of
from harness.study.trial import Trial
from harness.tune.stacked import member_metrics
from harness.tune.trainable import FINISHED, Metrics

if TYPE_CHECKING:
    from ray.tune.experiment import Trial as TuneTrial

__all__ = ["ProgressPrinter"]


class ProgressPrinter(tune.Callback):
    """Tune callback printing trials done / running / pending, the best so far and the time left."""

    def __init__(self, store: ResultStore, *, total: int, objective: str, mode: str,
                 interval_s: float = 10.0, recorded: dict[str, str] | None = None,
                 status_of: Callable[[str], str | None] | None = None):
        self.store = store
        #: a settled trial's status: ``ResultRecorder.status_of`` (it just wrote or read the row), else the row
        self.status_of = status_of or store.status
        self.recorded = dict(recorded or {})  # trial id -> status, rows of earlier runs
        self.total = total
        self.objective = objective
        self.mode = mode
        self.interval_s = interval_s
        self._reset()

    def _reset(self) -> None:
        self.start = time.monotonic()
        self.last_print = 0.0
        self.statuses: dict[str, str] = dict(getattr(self, "recorded", {}))
        self.best: tuple[float, str] | None = None
        self.finished_here = 0
        #: when the run's first trial was running (``time.monotonic``): Tune's start, a worker and its imports
        self.first_running: float | None = None

    def next_phase(self, *, total: int, recorded: dict[str, str]) -> None:
        """Count the next phase's trials from here on (a confirmation in the tuning phase's Tune run)."""
        self.total, self.recorded = total, dict(recorded)
        self._reset()

    def setup(self, stop: object = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: object) -> None:
        self._reset()

    @property
    def out(self) -> TextIO:
        return sys.stdout

    def line(self, trials: list[TuneTrial]) -> str:
        running = sum(len(members_of(_unit(t))) for t in trials if t.status == "RUNNING")
        done = len(self.statuses)
        running = min(running, self.total - done)
        pending = max(0, self.total - done - running)
        by_status: dict[str, int] = {}
        for s in self.statuses.values():
            by_status[s] = by_status.get(s, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        elapsed = time.monotonic() - self.start
        parts = [f"[{format_duration(elapsed):>6}] {done}/{self.total} done" + (f" ({detail})" if detail else ""),
                 f"{running} running", f"{pending} pending"]
        if self.best is not None:
            parts.append(f"best single trial {self.objective} {self.best[0]:.4g} ({self.best[1]})")
        if self.finished_here and done < self.total:
            left = (self.total - done) * elapsed / self.finished_here
            parts.append(f"~{format_duration(left)} left")
        return " | ".join(parts)

    def _print(self, trials: list[TuneTrial], force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_print >= self.interval_s:
            self.last_print = now
            print(self.line(trials), file=self.out, flush=True)

    def _settle(self, trial: TuneTrial, failed: bool) -> None:
        unit = _unit(trial)
        for desc in members_of(unit):
            own = member_metrics(trial.last_result, desc.trial_id) if isinstance(unit, Stack) else trial.last_result
            self._settle_one(desc, own, failed)

    def _settle_one(self, desc: Trial, last_result: Metrics | None, failed: bool) -> None:
        status = self.status_of(desc.trial_id) or ("failed" if failed else "pruned")
        self.statuses[desc.trial_id] = status
        self.finished_here += 1
        if status == "failed":  # the cause at once, not only in the trial's folder
            row = self.store.read_trial(desc.trial_id) or {}
            print(f"trial {desc.trial_id} ({desc.variant}, seed {desc.seed}) failed: "
                  f"{last_line(row.get('error'))}", file=self.out, flush=True)
        value: object = (last_result or {}).get("objective")
        if value is None and status in FINISHED:  # a stack member that ended before the stack's last report
            value = (self.store.read_trial(desc.trial_id) or {}).get("objective")
        if status in FINISHED and isinstance(value, int | float) and math.isfinite(value):
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better:
                self.best = (float(value), f"{desc.variant}, seed {desc.seed}")

    def on_step(self, iteration: int, trials: list[TuneTrial], **info: object) -> None:
        """Every loop of Tune's controller: a line every ``interval_s`` also while no trial reports (trials
        waiting for resources, a cluster that stopped answering), not only on trial events."""
        self._print(trials)

    def on_trial_start(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        if self.first_running is None:
            self.first_running = time.monotonic()
        self._print(trials, force=self.last_print == 0.0)

    def on_trial_result(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, result: Metrics,
                        **info: object) -> None:
        self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        self._settle(trial, failed=False)
        self._print(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        self._settle(trial, failed=True)
        self._print(trials, force=True)


def _unit(trial: TuneTrial) -> object:
    """What a Tune trial runs: a ``Trial``, a ``Stack`` or (not a study's trial) anything else."""
    return trial.config.get("trial") if isinstance(trial.config, dict) else None
